"""Batch concurrent requests: images that pad to the same shape are read together, one batch at a time.

Padding changes what the encoder sees (it has no padding mask), so an image batched with larger ones could read
differently than alone. Each image is padded up to a fixed bucket (a multiple of `bucket`, by default
`READING_BUCKET`), and a batch holds only images of one bucket: a batch holds exactly the pixels each image would
have alone, so an image's reading does not depend on which requests arrived with it. Buckets also let images of
different sizes share a batch; and the shipped model, trained on padded batches, reads padded images better
(bench/predict_latency.py).
"""

import asyncio
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from transformers import PreTrainedModel, ProcessorMixin

from modeling.image_processing_im2latex import READING_BUCKET
from modeling.inference import Reading, read_formulas

logger = logging.getLogger(__name__)


class Batcher:
    """Reads prepared images in batches on one worker thread, so the event loop never runs the model.

    Args:
        model: a loaded im2latex model in eval mode.
        processor: its processor (pads the images).
        max_batch_size: at most this many images per `generate` call.
        num_beams: beams; the model's generation config decides when None.
        bucket: (height, width) steps that images are padded up to; None pads only to the model's stride.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        max_batch_size: int = 8,
        num_beams: int | None = None,
        bucket: tuple[int, int] | None = READING_BUCKET,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if bucket is not None and (len(bucket) != 2 or min(bucket) < 1):
            raise ValueError(f"bucket must be (height, width) with positive sides, got {bucket}")
        self.bucket = bucket
        self.model = model
        self.processor = processor
        self.max_batch_size = max_batch_size
        self.num_beams = num_beams
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="im2latex-model")

    def shape_key(self, image: np.ndarray) -> tuple[int, int]:
        """The padded shape of an image read alone: images with the same key batch without extra padding."""
        return self.processor.image_processor.padded_shape([image.shape], self.bucket)

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop and the worker thread; waiting requests get an error."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def read(self, image: np.ndarray) -> Reading:
        """Queue one prepared image and wait for its reading."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Whatever arrived while the previous batch ran is read next: no fixed waiting window.
            waiting = [await self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            groups = defaultdict(list)
            for image, future in waiting:
                groups[self.shape_key(image)].append((image, future))
            for group in groups.values():
                for start in range(0, len(group), self.max_batch_size):
                    await self._read_chunk(loop, group[start : start + self.max_batch_size])

    async def _read_chunk(self, loop: asyncio.AbstractEventLoop, chunk: list[tuple[np.ndarray, asyncio.Future]]):
        images = [image for image, _ in chunk]
        try:
            readings = await loop.run_in_executor(
                self._executor,
                lambda: read_formulas(
                    self.model, self.processor, images, num_beams=self.num_beams, bucket=self.bucket
                ),
            )
        except Exception as error:  # a failed batch fails its requests, never the loop
            logger.exception("reading a batch of %d images failed", len(images))
            for _, future in chunk:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), reading in zip(chunk, readings, strict=True):
            if not future.done():  # the client may have gone away
                future.set_result(reading)
