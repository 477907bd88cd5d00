// The fashionsearch page: one photo in, attributes and similar products out, over the gateway's /v1 JSON API.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);

const state = {
  file: null,          // the photo being searched (a File or Blob)
  photoResult: null,   // the last photo search result, to come back to after "more like this"
  similarTo: null,     // the hit whose "more like this" is shown (null: the photo's results)
  outfit: null,        // the last outfit search result ({items}), when "every product" is chosen
  selected: 0,         // the outfit item whose results are shown
};

const ATTRIBUTE_NAMES = {
  masterCategory: "Category",
  subCategory: "Subcategory",
  articleType: "Article type",
  gender: "Gender",
  baseColour: "Colour",
  season: "Season",
  usage: "Usage",
};

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setStatus(text) {
  $("status").textContent = text || "";
}

function filterParams() {
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const params = new URLSearchParams({ top_k: String(TOP_K) });
  if (mode === "explicit") {
    const category = $("category").value;
    if (!category) {
      return null;
    }
    params.append("filter.subCategory", category);
  } else {
    params.set("filter_mode", mode);
  }
  return params;
}

// ---- API key ---------------------------------------------------------------------------------------------------
// With GATEWAY_READ_API_KEYS set, searches need a key. The person enters it here; it stays in this tab's
// sessionStorage (gone when the tab closes, never shared with other tabs, never a cookie) and goes out as the
// Authorization header of the page's own requests, nothing else.

const KEY_ITEM = "fashionsearch.apiKey";

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch (error) {
    return "";  // storage turned off: the person enters the key again after a reload
  }
}

function showKeyState(needed, message) {
  const key = storedKey();
  $("key-form").hidden = !needed;
  $("key-in-use").hidden = needed || !key;
  if (needed && message) {
    showMessage(message);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!/^[\x21-\x7e]+$/.test(key)) {
    showMessage("An API key is printable ASCII without spaces; check what you pasted.");
    return;
  }
  try {
    sessionStorage.setItem(KEY_ITEM, key);
  } catch (error) {
    showMessage("This browser does not let the page keep the key (storage is turned off).");
    return;
  }
  $("key").value = "";
  showMessage("");
  showKeyState(false);
  reload();
});

$("forget-key").addEventListener("click", () => {
  try {
    sessionStorage.removeItem(KEY_ITEM);
  } catch (error) {
    // nothing kept, nothing to forget
  }
  showKeyState(false);
  reload();
});

async function callApi(url, options = {}) {
  const key = storedKey();
  const headers = key ? { ...options.headers, Authorization: `Bearer ${key}` } : options.headers;
  let response;
  try {
    response = await fetch(url, { ...options, headers });
  } catch (error) {
    throw { status: 0, message: "The gateway cannot be reached. Is it running?" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    if (response.status === 401) {
      showKeyState(true);
    }
    throw { status: response.status, message };
  }
  return body;
}

function explain(error, fileName) {
  const file = fileName ? `“${fileName}”` : "That file";
  switch (error.status) {
    case 400:
      return `${file} could not be used: ${error.message}. Please pick another photo.`;
    case 413:
      return `${file} is too large: ${error.message}.`;
    case 401:
      return storedKey()
        ? `The gateway did not accept your API key (${error.message}). Enter another one.`
        : "This gateway needs an API key for searches: enter it above.";
    case 403:
      return `Your API key does not allow this (${error.message}).`;
    case 404:
      return `Not found: ${error.message}.`;
    case 409:
      return `The catalogue needs re-indexing: ${error.message}.`;
    case 503:
    case 504:
      return `The search service is busy or down right now (${error.message}). Please try again in a moment.`;
    default:
      return error.message || "Something went wrong.";
  }
}

// ---- photo search --------------------------------------------------------------------------------------------

function looksLikeImage(file) {
  return !file.type || file.type.startsWith("image/");
}

function usePhoto(file) {
  if (!file) {
    return;
  }
  if (!looksLikeImage(file)) {
    showMessage(`“${file.name}” is not an image (${file.type}). Pick a JPEG, PNG or WebP photo.`);
    return;
  }
  if (file.size === 0) {
    showMessage(`“${file.name || "The file"}” is empty. Pick a JPEG, PNG or WebP photo.`);
    return;
  }
  state.file = file;
  const preview = $("preview");
  if (preview.dataset.url) {
    URL.revokeObjectURL(preview.dataset.url);
  }
  preview.dataset.url = URL.createObjectURL(file);
  preview.src = preview.dataset.url;
  preview.alt = file.name ? `Your photo: ${file.name}` : "Your photo";
  preview.hidden = false;
  $("drop").classList.add("has-photo");
  searchPhoto();
}

function clearPhoto() {
  state.file = null;
  state.photoResult = null;
  state.outfit = null;
  const preview = $("preview");
  preview.hidden = true;
  preview.removeAttribute("src");
  $("drop").classList.remove("has-photo");
  $("results").hidden = true;
  $("placeholder").hidden = false;
}

function findsOutfit() {
  return document.querySelector('input[name="find"]:checked').value === "outfit";
}

async function searchPhoto() {
  if (!state.file) {
    return;
  }
  $("look-in").hidden = findsOutfit();  // each product is searched in its own predicted category
  if (findsOutfit()) {
    return searchOutfit();
  }
  const params = filterParams();
  if (params === null) {
    showMessage("Choose a category to search in, or pick another option.");
    return;
  }
  showMessage("");
  setStatus("Searching…");
  document.body.classList.add("busy");
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo");
  const refine = refineWords();
  if (refine) {
    params.set("refine", refine);
  }
  try {
    const result = await callApi(`/v1/search?${params}`, { method: "POST", body: form });
    state.photoResult = result;
    state.outfit = null;
    state.similarTo = null;
    renderPhotoResult(result);
    setStatus("");
    if (window.matchMedia("(max-width: 720px)").matches) {
      $("results").scrollIntoView({ behavior: "smooth", block: "start" });
    }
  } catch (error) {
    setStatus("");
    if (isAboutWords(error)) {
      showMessage(explainWords(error));
      return;
    }
    showMessage(explain(error, state.file.name));
    if (error.status === 400 || error.status === 413) {
      clearPhoto();
    }
  } finally {
    document.body.classList.remove("busy");
  }
}

function renderPhotoResult(result) {
  $("placeholder").hidden = true;
  $("results").hidden = false;
  $("outfit").hidden = !state.outfit;
  $("about-photo").hidden = false;
  $("back").hidden = true;
  $("results-title").textContent = "What we see";
  $("similar-title").textContent = "Similar products";
  $("refine-form").hidden = false;
  renderTerms(result.refine_terms || [], [], "");
  renderAttributes(result.attributes);
  $("suggested-name").textContent = result.suggested_name || "—";
  const keywords = $("keywords");
  keywords.replaceChildren(
    ...result.keywords.map((word) => {
      const li = document.createElement("li");
      li.textContent = word;
      return li;
    })
  );
  renderHits(result.hits, result.applied_filters);
}

function renderAttributes(attributes) {
  const list = $("attributes");
  list.replaceChildren(
    ...attributes.map((attribute) => {
      const [top, ...others] = attribute.labels;
      const li = document.createElement("li");
      li.className = "attribute";
      const name = document.createElement("span");
      name.className = "attr-name";
      name.textContent = ATTRIBUTE_NAMES[attribute.attribute] || attribute.attribute;
      const label = document.createElement("span");
      label.className = "attr-label";
      label.textContent = top ? top.label : "—";
      const pct = top ? Math.round(top.probability * 100) : 0;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuenow", String(pct));
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-label", `${name.textContent} confidence`);
      const fill = document.createElement("span");
      fill.style.width = `${pct}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "attr-pct";
      value.textContent = `${pct}%`;
      li.append(name, label, bar, value);
      if (others.length) {
        const alt = document.createElement("span");
        alt.className = "attr-alt";
        alt.textContent = "or " + others.map((o) => `${o.label} ${Math.round(o.probability * 100)}%`).join(", ");
        li.append(alt);
      }
      return li;
    })
  );
}

function describeFilters(filters) {
  // applied_filters: [{field, values}], as over gRPC.
  if (!filters || !filters.length) {
    return "Searched the whole catalogue.";
  }
  return "Searched in " + filters.map((f) => `${f.field} = ${f.values.join(" or ")}`).join(", ") + ".";
}

function renderHits(hits, filters) {
  $("applied").textContent = describeFilters(filters);
  const list = $("hits");
  if (!hits.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No similar products found here. Try “any category”.";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(...hits.map(hitCard));
}

function hitCard(hit) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "hit";
  button.title = "More like this";
  const name = hit.payload.name || `Product ${hit.id}`;
  let thumb;
  if (hit.image_url) {
    thumb = document.createElement("img");
    thumb.src = hit.image_url;
    thumb.alt = name;
  } else {
    thumb = document.createElement("span");
    thumb.className = "no-image";
    thumb.textContent = "no image";
  }
  const thumbBox = document.createElement("span");
  thumbBox.className = "thumb";
  thumbBox.append(thumb);
  const title = document.createElement("span");
  title.className = "hit-name";
  title.textContent = name;
  const meta = document.createElement("span");
  meta.className = "hit-meta";
  const category = [hit.payload.article_type, hit.payload.base_colour].filter(Boolean).join(" · ");
  meta.textContent = category;
  const distance = document.createElement("span");
  distance.className = "hit-distance";
  distance.textContent = `distance ${hit.distance.toFixed(3)} · #${hit.id}`;
  button.append(thumbBox, title, meta, distance);
  button.addEventListener("click", () => moreLikeThis(hit));
  li.append(button);
  return li;
}

// ---- more like this ------------------------------------------------------------------------------------------

async function moreLikeThis(hit) {
  let params = filterParams();
  if (params === null) {
    params = new URLSearchParams({ top_k: String(TOP_K) });
  }
  showMessage("");
  setStatus("Finding more like this…");
  document.body.classList.add("busy");
  const refine = state.similarTo === hit ? refineWords() : "";
  if (!refine) {
    $("refine-text").value = "";
  } else {
    params.set("refine", refine);
  }
  try {
    const result = await callApi(`/v1/items/${hit.id}/similar?${params}`);
    state.similarTo = hit;
    $("outfit").hidden = true;
    $("refine-form").hidden = false;
    renderTerms(result.refine_terms || [], [], "");
    $("about-photo").hidden = true;
    $("back").hidden = !state.photoResult;
    $("similar-title").textContent = `More like “${hit.payload.name || "#" + hit.id}”`;
    renderHits(result.hits, result.applied_filters);
    $("results").scrollIntoView({ behavior: "smooth", block: "start" });
    setStatus("");
  } catch (error) {
    setStatus("");
    showMessage(isAboutWords(error) ? explainWords(error) : explain(error));
  } finally {
    document.body.classList.remove("busy");
  }
}

// ---- words: text search and refinement ------------------------------------------------------------------------

function isAboutWords(error) {
  return (error.status === 400 || error.status === 409) && String(error.message).startsWith("refine_text");
}

function refineWords() {
  return $("refine-text").value.trim();
}

function renderTerms(terms, unknownWords, reason) {
  const parts = [];
  if (terms.length) {
    const read = terms.map((t) => `${ATTRIBUTE_NAMES[t.field] || t.field} ${t.value} (${Math.round(t.confidence * 100)}%)`);
    parts.push("Words read as: " + read.join(", ") + ".");
  }
  if (unknownWords.length) {
    parts.push(`Unknown words: ${unknownWords.join(", ")}.`);
  }
  if (reason) {
    parts.push(reason.charAt(0).toUpperCase() + reason.slice(1) + ".");
  }
  $("understood").textContent = parts.join(" ");
  $("understood").hidden = !parts.length;
}

async function searchText(query) {
  showMessage("");
  setStatus("Searching…");
  document.body.classList.add("busy");
  try {
    const result = await callApi("/v1/search/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, top_k: TOP_K }),
    });
    $("placeholder").hidden = true;
    $("results").hidden = false;
    $("outfit").hidden = true;
    $("about-photo").hidden = true;
    $("back").hidden = !state.photoResult;
    $("refine-form").hidden = true;
    $("similar-title").textContent = `Products for “${query}”`;
    renderHits(result.hits, result.applied_filters);
    renderTerms(result.terms, result.unknown_words, result.reason);
    setStatus("");
  } catch (error) {
    setStatus("");
    showMessage(explainWords(error));
  } finally {
    document.body.classList.remove("busy");
  }
}

function explainWords(error) {
  if (error.status === 400) {
    return `Check your words: ${error.message}.`;
  }
  if (error.status === 409) {
    return `Search by words is not available right now: ${error.message}.`;
  }
  return explain(error);
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("text-query").value.trim();
  if (!query) {
    showMessage("Type a few words first, e.g. “women blue kurtas”.");
    return;
  }
  searchText(query);
});

$("refine-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.similarTo) {
    moreLikeThis(state.similarTo);
  } else {
    searchPhoto();
  }
});

// ---- copying -------------------------------------------------------------------------------------------------

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    // Plain http on another host is not a secure context: fall back to a selection copy.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const before = button.textContent;
  button.textContent = "Copied ✓";
  setTimeout(() => (button.textContent = before), 1500);
}

$("copy-name").addEventListener("click", (event) => copyText($("suggested-name").textContent, event.currentTarget));
$("copy-keywords").addEventListener("click", (event) => {
  const words = [...$("keywords").children].map((li) => li.textContent);
  copyText(words.join(", "), event.currentTarget);
});

// ---- input: pick, drop, paste --------------------------------------------------------------------------------

$("file").addEventListener("change", (event) => {
  usePhoto(event.target.files[0]);
  event.target.value = "";
});

const drop = $("drop");
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("file").click();
  }
});
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const kind of ["dragleave", "drop"]) {
  drop.addEventListener(kind, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = event.dataTransfer.files;
  if (files.length) {
    usePhoto(files[0]);
  } else {
    showMessage("Drop an image file from your computer (not a link).");
  }
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => event.preventDefault());

document.addEventListener("paste", (event) => {
  const items = [...(event.clipboardData ? event.clipboardData.items : [])];
  const image = items.find((item) => item.kind === "file" && item.type.startsWith("image/"));
  if (image) {
    usePhoto(image.getAsFile());
  } else if (items.length) {
    showMessage("The clipboard holds no image. Copy a photo, then paste it here.");
  }
});

// ---- filters -------------------------------------------------------------------------------------------------

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", searchPhoto);
}
$("category").addEventListener("change", () => {
  document.querySelector('input[name="mode"][value="explicit"]').checked = true;
  searchPhoto();
});

$("back").addEventListener("click", () => {
  if (state.outfit) {
    renderOutfit(state.outfit, state.selected);
  } else if (state.photoResult) {
    renderPhotoResult(state.photoResult);
  }
});

for (const radio of document.querySelectorAll('input[name="find"]')) {
  radio.addEventListener("change", searchPhoto);
}

// ---- outfit: every product in the photo ------------------------------------------------------------------------
// POST /v1/search/outfit answers {items: [{box, group, score, attributes, suggested_name, keywords, hits}]}, boxes in
// pixels of the photo as the browser shows it (EXIF orientation applied). Each box is drawn over the photo; clicking
// one shows that product's attributes, name, keywords and similar products.

async function searchOutfit() {
  showMessage("");
  setStatus("Finding the products in your photo…");
  document.body.classList.add("busy");
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo");
  const params = new URLSearchParams({ top_k: String(TOP_K) });
  const refine = refineWords();
  if (refine) {
    params.set("refine", refine);
  }
  try {
    const result = await callApi(`/v1/search/outfit?${params}`, { method: "POST", body: form });
    state.outfit = result;
    state.photoResult = result;
    state.similarTo = null;
    await renderOutfit(result, 0);
    setStatus("");
  } catch (error) {
    setStatus("");
    if (isAboutWords(error)) {
      showMessage(explainWords(error));
      return;
    }
    showMessage(error.status === 409 ? `Outfit search is not available here: ${error.message}.` : explain(error, state.file.name));
    if (error.status === 400 || error.status === 413) {
      clearPhoto();
    }
  } finally {
    document.body.classList.remove("busy");
  }
}

async function renderOutfit(result, selected) {
  const image = $("outfit-img");
  image.src = $("preview").src;
  try {
    await image.decode();
  } catch (error) {
    // not decodable by the browser (the gateway read it): boxes are drawn once it loads, if ever
  }
  const count = result.items.length;
  $("outfit-hint").textContent = count
    ? `${count} product${count === 1 ? "" : "s"} found. Click a box to see what it is and similar products.`
    : "No product found in this photo. Try “the product in the photo” instead.";
  const width = image.naturalWidth || 1;
  const height = image.naturalHeight || 1;
  $("boxes").replaceChildren(
    ...result.items.map((item, index) => {
      const box = document.createElement("button");
      box.type = "button";
      box.className = "box";
      box.style.left = `${(100 * item.box.left) / width}%`;
      box.style.top = `${(100 * item.box.top) / height}%`;
      box.style.width = `${(100 * item.box.width) / width}%`;
      box.style.height = `${(100 * item.box.height) / height}%`;
      const label = document.createElement("span");
      label.textContent = `${index + 1} ${item.group}`;
      box.append(label);
      box.title = `${item.suggested_name || item.group} (${Math.round(item.score * 100)}%)`;
      box.setAttribute("aria-label", `Product ${index + 1}: ${box.title}`);
      box.addEventListener("click", () => selectOutfitItem(index));
      return box;
    })
  );
  if (count) {
    selectOutfitItem(Math.min(selected, count - 1));
  } else {
    $("placeholder").hidden = true;
    $("results").hidden = false;
    $("outfit").hidden = false;
    $("about-photo").hidden = true;
    $("back").hidden = true;
    $("refine-form").hidden = false;
    $("applied").textContent = "";
    $("similar-title").textContent = "";
    $("hits").replaceChildren();
  }
}

function selectOutfitItem(index) {
  const item = state.outfit.items[index];
  state.selected = index;
  state.similarTo = null;
  [...$("boxes").children].forEach((box, i) => box.classList.toggle("selected", i === index));
  const sub = item.attributes.find((a) => a.attribute === "subCategory");
  const filters = sub && sub.labels.length ? [{ field: "subCategory", values: [sub.labels[0].label] }] : [];
  renderPhotoResult({ ...item, applied_filters: filters, refine_terms: [] });
  $("results-title").textContent = `Product ${index + 1}: what we see`;
}

async function loadCategories() {
  const select = $("category");
  try {
    const body = await callApi("/v1/categories");
    const options = body.values.map(({ value, count }) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = `${value} (${count})`;
      return option;
    });
    const placeholder = document.createElement("option");
    placeholder.value = "";
    placeholder.textContent = options.length ? "choose…" : "(catalogue is empty)";
    select.replaceChildren(placeholder, ...options);
  } catch (error) {
    select.replaceChildren(new Option("(unavailable)", ""));
  }
}

async function loadStats() {
  try {
    const stats = await callApi("/v1/stats");
    const parts = [`${stats.item_count.toLocaleString()} products`];
    // Model names say what they are ("embedder@3", "paper-autoencoder@1").
    for (const model of [stats.running_embedder, stats.classifier]) {
      if (model) parts.push(`${model.name}@${model.version}`);
    }
    $("stats").textContent = parts.join(" · ");
  } catch (error) {
    $("stats").textContent = "catalogue status unavailable";
  }
}

// Everything the page loads from /v1, again: at start, and after a key is entered or forgotten.
function reload() {
  loadCategories();
  loadStats();
  if (state.file) {
    searchPhoto();
  }
}

showKeyState(false);
reload();
