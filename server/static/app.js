// The im2latex page: send an image to /predict, show the LaTeX, a MathJax preview and a copy button.
"use strict";

const $ = (id) => document.getElementById(id);
let reading = null; // the last /predict answer

function mathjaxReady() {
  return window.MathJax && typeof window.MathJax.tex2svgPromise === "function";
}

function chosenLatex() {
  if (!reading) return "";
  const form = document.querySelector("input[name=form]:checked").value;
  return form === "tokens" ? reading.latex : reading.compact_latex;
}

async function renderPreview() {
  const preview = $("preview");
  preview.replaceChildren();
  if (!mathjaxReady()) {
    $("preview-note").hidden = false;
    return;
  }
  $("preview-note").hidden = true;
  await window.MathJax.startup.promise;
  const node = await window.MathJax.tex2svgPromise(reading.latex, { display: true });
  preview.appendChild(node);
  // Adds MathJax's stylesheet for the new node (the documented way after tex2svg on one's own element).
  window.MathJax.startup.document.clear();
  window.MathJax.startup.document.updateDocument();
}

function show() {
  $("latex").value = chosenLatex();
  $("score").textContent = `score ${reading.score.toFixed(2)}` + (reading.truncated ? " (truncated)" : "");
  $("result").hidden = false;
  renderPreview().catch((error) => {
    $("preview-note").hidden = false;
    $("preview-note").textContent = `Preview failed: ${error}`;
  });
}

async function read(file) {
  if (!file || !file.type.startsWith("image/")) {
    $("status").textContent = "That is not an image.";
    return;
  }
  $("image").src = URL.createObjectURL(file);
  $("image").hidden = false;
  $("status").textContent = "Reading…";
  const body = new FormData();
  body.append("image", file, file.name || "pasted.png");
  try {
    const response = await fetch("/predict", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) {
      $("status").textContent = `Error ${response.status}: ${answer.detail}`;
      return;
    }
    reading = answer;
    $("status").textContent = `Read in ${answer.seconds.toFixed(2)} s.`;
    show();
  } catch (error) {
    $("status").textContent = `The server could not be reached: ${error}`;
  }
}

function firstImage(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file && file.type.startsWith("image/")) return file;
  }
  return null;
}

$("file").addEventListener("change", (event) => read(event.target.files[0]));

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  read(firstImage(event.dataTransfer.files));
});

document.addEventListener("paste", (event) => {
  const file = firstImage(event.clipboardData && event.clipboardData.items);
  if (file) {
    event.preventDefault();
    read(file);
  }
});

for (const radio of document.querySelectorAll("input[name=form]")) {
  radio.addEventListener("change", () => reading && show());
}

$("copy").addEventListener("click", async () => {
  const text = $("latex").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    $("latex").select(); // clipboard API refused (not a secure context): fall back to the selection
    document.execCommand("copy");
  }
  $("copy").textContent = "Copied";
  setTimeout(() => ($("copy").textContent = "Copy"), 1500);
});

$("mathjax-script").addEventListener("error", () => ($("preview-note").hidden = false));
