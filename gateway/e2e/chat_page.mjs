// The chat page in headless Chromium (Debian's chromium, driven by playwright-core).
// Run by ops/tests/chat_page.rs against `cauce up`; it can also be run by hand:
//
//   ./ops/setup                         # chromium, and playwright-core in ./node_modules
//   CAUCE_URL=http://127.0.0.1:8080 node gateway/e2e/chat_page.mjs [screenshot folder]
//
// On a desktop-sized and then a phone-sized page it renders a fixed Markdown answer
// with the page's own renderer (code block, citation link, no script), types a question, waits for tokens
// to stream in and sources to appear as links, presses stop, reloads and checks that
// the conversation is still there, uploads a file (the button, then a drop) and waits
// for each to show as indexed (desktop), and saves screenshots. Exits non-zero on the first
// failed check.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = (process.env.CAUCE_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const screenshots = process.argv[2] ?? ".";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// only docs/operations.md ("The local index") answers it
const question = process.env.CAUCE_QUESTION ??
  "Where does a retrieval worker keep its local index, and what is stored in meta.json? Explain in detail.";

// This machine has no outside network: without these, chromium hangs on connections
// to Google's services.
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function check(condition, what) {
  if (!condition) throw new Error("check failed: " + what);
  console.log("ok -", what);
}

// A Markdown answer with a code block, citations and sources, as a conversation shows it.
async function showFixedAnswer(page) {
  await page.evaluate(() => {
    render({ role: "user", content: "How do I read a file line by line in Python?" });
    render({
      role: "assistant",
      content: "Open it with `open()` and iterate over the file object [1]:\n\n" +
        "```python\nwith open(\"notes.txt\", encoding=\"utf-8\") as f:\n    for line in f:\n" +
        "        print(line.rstrip())\n```\n\n- `with` closes the file for you [2].\n" +
        "- Each `line` keeps its newline; `rstrip()` drops it.",
      sources: [
        { number: 1, title: "Tutorial", heading_path: ["Tutorial", "Reading and Writing Files"],
          location: "https://docs.python.org/3/tutorial/inputoutput.html#reading-and-writing-files" },
        { number: 2, title: "Tutorial", heading_path: ["Tutorial", "Methods of File Objects"],
          location: "https://docs.python.org/3/tutorial/inputoutput.html#methods-of-file-objects" },
      ],
    });
  });
}

async function session(context, name, viewport) {
  const page = await context.newPage();
  await page.setViewportSize(viewport);
  page.on("pageerror", err => { throw new Error("page error: " + err.message); });
  // the page's Content-Security-Policy blocks nothing the page itself does
  const blocked = [];
  page.on("console", msg => {
    if (/Content Security Policy/i.test(msg.text())) blocked.push(msg.text());
  });
  await page.goto(base + "/");
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  check(await page.locator("#question").isVisible(), `${name}: the question box is visible`);

  // the page's own renderer on a fixed answer: Markdown becomes elements, a citation
  // marker of a known source links to it, and HTML in the answer cannot run script
  const fixed = await page.evaluate(() => {
    const markdown = "Install it with **pip** [1].\n\n```python\nprint('hi [1]')\n```\n\n" +
      "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n" +
      "<img src=x onerror=\"window.pwned = 1\"> See [7] and `[1]`.";
    const sources = [{ number: 1, title: "Guide", location: "docs/guide.md#install" }];
    const el = renderMarkdown(markdown, sources);
    document.body.appendChild(el);
    const img = el.querySelector("img");
    const result = {
      pre: el.querySelectorAll("pre").length,
      code: (el.querySelector("pre code") || {}).textContent,
      highlighted: el.querySelectorAll("pre code [class^=hljs-]").length,
      strong: (el.querySelector("strong") || {}).textContent,
      cites: [...el.querySelectorAll("a.cite")].map(a => a.getAttribute("href")),
      items: el.querySelectorAll("li").length,
      cells: el.querySelectorAll("td").length,
      handler: img ? img.getAttribute("onerror") : null,
      text: el.textContent,
    };
    el.remove();
    return result;
  });
  await page.waitForTimeout(200);
  // the fixture's <img onerror> is an attack: the policy may say it blocked it
  check(await page.evaluate(() => window.pwned === undefined), `${name}: the answer's HTML ran no script`);
  blocked.length = 0;
  check(fixed.pre === 1 && fixed.code.includes("print('hi [1]')"), `${name}: a code block is a <pre>`);
  check(fixed.highlighted > 0, `${name}: the code block is highlighted`);
  check(fixed.strong === "pip" && fixed.items === 2 && fixed.cells === 2,
    `${name}: bold, lists and tables render`);
  check(fixed.cites.length === 1 && fixed.cites[0] === "docs/guide.md#install",
    `${name}: the marker [1] links to source 1, not [7] nor code (${JSON.stringify(fixed.cites)})`);
  check(fixed.handler === null && !(await page.evaluate(() => window.pwned)),
    `${name}: HTML in an answer runs no script`);
  check(fixed.text.includes("See [7]"), `${name}: an unknown marker stays text`);

  // the same kind of answer in a conversation, for the screenshot
  await showFixedAnswer(page);
  await page.screenshot({ path: join(screenshots, `chat_page_${name}_markdown.png`) });
  await page.evaluate(() => document.getElementById("log").replaceChildren());

  await page.fill("#question", question);
  await page.press("#question", "Enter");
  check((await page.locator(".msg.user .text").last().textContent()) === question,
    `${name}: the question shows in the conversation`);
  check(await page.locator("#stop").isEnabled(), `${name}: stop is enabled while answering`);

  // sources come before the first token
  await page.waitForSelector(".msg.assistant .sources a", { timeout: 300_000 });
  const links = page.locator(".msg.assistant .sources a");
  check((await links.count()) > 0, `${name}: sources appear as links`);
  const hrefs = await links.evaluateAll(as => as.map(a => a.getAttribute("href")));
  check(hrefs.some(h => h.includes("operations.md")), `${name}: the operations guide is a source`);

  // tokens stream in: the text grows while the answer is still running
  const answer = page.locator(".msg.assistant .text").last();
  const grown = async (than) => page.waitForFunction(
    (than) => {
      const texts = document.querySelectorAll(".msg.assistant .text");
      const text = texts[texts.length - 1].textContent;
      return text !== "…" && text !== "Queued…" && text.length > than;
    },
    than,
    { timeout: 300_000 },
  );
  await grown(0);
  const first = (await answer.textContent()).length;
  await grown(first);
  check(await page.locator("#stop").isEnabled(), `${name}: tokens stream into the answer`);

  await page.screenshot({ path: join(screenshots, `chat_page_${name}_streaming.png`) });
  await page.locator("#stop").click();
  await page.waitForFunction(() => document.querySelector("#stop").disabled, null, { timeout: 30_000 });
  check(await page.locator("#send").isEnabled(), `${name}: stop ends the generation`);
  check(await page.locator(".msg.assistant .note").last().isVisible(), `${name}: the answer says it was stopped`);
  const stopped = await answer.textContent();

  await page.reload();
  await page.waitForSelector(".msg.user");
  check((await page.locator(".msg.user .text").first().textContent()) === question,
    `${name}: the question is still there after a reload`);
  check((await page.locator(".msg.assistant .text").first().textContent()) === stopped,
    `${name}: the answer is still there after a reload`);
  check((await page.locator(".msg.assistant .sources a").count()) > 0,
    `${name}: the sources are still there after a reload`);
  check(await page.locator(".msg.assistant .note").first().isVisible(),
    `${name}: the answer still says it was stopped after a reload`);
  // conversations: a new chat starts empty, the first is listed by its question, comes
  // back when opened, and can be renamed
  await page.locator("#clear").click();
  check((await page.locator("#log .msg").count()) === 0, `${name}: a new chat starts empty`);
  const openChats = async () => {
    if (await page.locator("#chats-toggle").isVisible()) await page.locator("#chats-toggle").click();
  };
  await openChats();
  const listed = page.locator("#chat-list li:not(.current) .open").first();
  check((await listed.textContent()) === question.slice(0, 60),
    `${name}: the first conversation is listed by its question`);
  await listed.click();
  check((await page.locator(".msg.user .text").first().textContent()) === question,
    `${name}: opening it brings it back`);
  await openChats();
  page.once("dialog", dialog => dialog.accept("Local index"));
  await page.locator("#chat-list li.current .rename").click();
  check((await page.locator("#chat-list li.current .open").textContent()) === "Local index",
    `${name}: a conversation can be renamed`);
  if (await page.locator("#chats-toggle").isVisible()) await page.locator("#chats-toggle").click();

  if (name === "desktop") {
    // regenerate replaces the last answer with a new one
    await page.locator(".msg.assistant .regenerate").last().click();
    await page.waitForSelector(".msg.assistant .sources a", { timeout: 300_000 });
    check(await page.locator("#stop").isEnabled(), `${name}: regenerate asks again`);
    await page.locator("#stop").click();
    await page.waitForFunction(() => document.querySelector("#stop").disabled, null, { timeout: 30_000 });
    const counts = await page.evaluate(() => [
      document.querySelectorAll(".msg.user").length, document.querySelectorAll(".msg.assistant").length]);
    check(counts[0] === 1 && counts[1] === 1, `${name}: the new answer replaces the old (${counts})`);
  }

  const label = await page.locator(".msg.assistant .sources a").first().textContent();
  check(label === "Operations › The local index", `${name}: a source reads "${label}"`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${name}: nothing sticks out sideways`);
  const path = join(screenshots, `chat_page_${name}.png`);
  await page.screenshot({ path });
  console.log("screenshot saved to", path);

  if (name === "desktop") {
    // an uploaded file goes through the queue and shows as indexed
    await page.setInputFiles("#files", { name: "field-trip.md", mimeType: "text/markdown",
      buffer: Buffer.from("# Field trip\n\nThe field trip to the tide pools leaves at nine.\n") });
    await page.waitForSelector("#doc-list li[data-state=indexed]", { timeout: 120_000 });
    const shown = await page.locator("#doc-list li a").first().textContent();
    check(shown === "Field trip", `${name}: the uploaded file is listed as "${shown}"`);
    // and one dropped on the page
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.items.add(new File(["# Lab safety\n\nGoggles stay on in the lab.\n"], "lab-safety.md",
        { type: "text/markdown" }));
      window.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    });
    await page.waitForSelector('#doc-list li[data-id^="up-lab-safety-md-"][data-state=indexed]', { timeout: 120_000 });
    // the README's picture: a Markdown answer beside an indexed document
    await page.evaluate(() => document.getElementById("log").replaceChildren());
    await showFixedAnswer(page);
    await page.screenshot({ path: join(screenshots, `chat_page_${name}_documents.png`) });
    await page.evaluate(() => document.getElementById("log").replaceChildren());

    // an uploaded HTML file opened from the page, with a key stored, runs nothing on
    // the page's origin: it shows as text, and its script never reads the key
    await page.evaluate(() => localStorage.setItem("cauce.apiKey", "sk-the-teachers-key"));
    const trap = "<html><head><title>Trap</title></head><body><p>Trap page text.</p><script>" +
      "if (window.opener) window.opener.stolen = localStorage.getItem('cauce.apiKey');" +
      "document.title = 'ran: ' + localStorage.getItem('cauce.apiKey');</script></body></html>";
    await page.setInputFiles("#files", { name: "trap.html", mimeType: "text/html", buffer: Buffer.from(trap) });
    const trapItem = '#doc-list li[data-id^="up-trap-html-"]';
    await page.waitForSelector(trapItem + "[data-state=indexed]", { timeout: 120_000 });
    const [popup] = await Promise.all([page.waitForEvent("popup"), page.locator(trapItem + " a").click()]);
    await popup.waitForURL(/^blob:/);
    await popup.waitForLoadState();
    const opened = await popup.evaluate(() =>
      ({ type: document.contentType, title: document.title, text: document.body ? document.body.innerText : "" }));
    check(opened.type === "text/plain" && !opened.title.startsWith("ran:") && opened.text.includes("<script>"),
      `${name}: an uploaded HTML file opens as text (${opened.type}, "${opened.title}")`);
    check(await page.evaluate(() => window.stolen === undefined), `${name}: its script never read the stored key`);
    await popup.close();
    await page.evaluate(() => localStorage.removeItem("cauce.apiKey"));
  }

  await openChats();
  page.once("dialog", dialog => dialog.accept());
  await page.locator("#chat-list li.current .delete").click();
  check((await page.locator("#log .msg").count()) === 0 &&
    (await page.locator("#chat-list li .open").count()) === 1,
    `${name}: deleting the only conversation leaves a new empty one`);
  check(blocked.length === 0, `${name}: the Content-Security-Policy blocked nothing (${blocked.join("; ")})`);
  await page.close();
}

const profile = mkdtempSync(join(tmpdir(), "cauce-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args,
});
try {
  await session(context, "desktop", { width: 1280, height: 800 });
  await session(context, "phone", { width: 390, height: 844 });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
