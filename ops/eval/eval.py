"""Retrieval quality of cauce against a reference BM25, computed in the same run.

Run by ops/eval-retrieval, which starts cauce (nats-server, a retrieval worker, a
gateway) over the corpus and passes its URL. For every question of the set:

- cauce: POST /v1/search with the conversation (the previous turn, then the question)
  and top_k 10; a source's page is its location without the corpus folder and anchor.
- the reference: bm25s with Lucene scoring (k1 1.5, b 0.75), Snowball stemming
  (PyStemmer) and stop words of the corpus' language (`--language`, English by
  default, or Spanish), over 200-word passages of each page's main text;
  the query is the previous user turn and the question; pages ranked by their best
  passage.

Relevance is by page. Reported per system: hit@1 and hit@4 (a relevant page first, or
among the first four distinct pages), MRR@10 and nDCG@10 over the first ten distinct
pages; for cauce also hit@4 over its first four sources as a chat answer gets them
(several may be one page). Follow-up questions are reported apart too. `--split tune`
keeps the even-numbered questions (to tune on), `--split held-out` the odd ones (to
report a tuned change on questions it was not tuned on).
"""

import argparse
import html.parser
import json
import math
import pathlib
import sys
import urllib.error
import urllib.request

import bm25s
import Stemmer

PASSAGE_WORDS = 200
DEPTH = 10
# what cauce's ingest leaves out of a Sphinx folder by default
EXCLUDED_DIRS = {"_sources", "_static", "node_modules"}


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}


class MainText(html.parser.HTMLParser):
    """The text of a Sphinx page's main part (role="main"), or of its body."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth_main = 0
        self.depth = 0
        self.skip = 0
        self.main = []
        self.body = []
        self.title = []
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        self.depth += 1
        if tag in ("script", "style"):
            self.skip += 1
        if tag == "title":
            self.in_title = True
        if self.depth_main == 0 and dict(attrs).get("role") == "main":
            self.depth_main = self.depth

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        if tag == "title":
            self.in_title = False
        if self.depth_main and self.depth == self.depth_main:
            self.depth_main = -1
        self.depth -= 1

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        if self.skip:
            return
        self.body.append(data)
        if self.depth_main > 0:
            self.main.append(data)

    def text(self):
        return " ".join(self.main or self.body)


def pages(corpus):
    for path in sorted(corpus.rglob("*.html")):
        relative = path.relative_to(corpus)
        if EXCLUDED_DIRS & set(relative.parts[:-1]):
            continue
        parser = MainText()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        title = " ".join("".join(parser.title).split())
        yield str(relative), title, parser.text()


def passages(corpus):
    """(page, text) for every 200-word passage, the title leading each."""
    out = []
    for page, title, text in pages(corpus):
        words = text.split()
        for start in range(0, max(len(words), 1), PASSAGE_WORDS):
            chunk = " ".join(words[start : start + PASSAGE_WORDS])
            out.append((page, f"{title} {chunk}"))
    return out


STOPWORDS = {"english": "en", "spanish": "es"}


class Reference:
    def __init__(self, corpus, language):
        self.passages = passages(corpus)
        self.stemmer = Stemmer.Stemmer(language)
        self.stopwords = STOPWORDS[language]
        tokens = bm25s.tokenize(
            [text for _, text in self.passages],
            stopwords=self.stopwords,
            stemmer=self.stemmer,
            show_progress=False,
        )
        self.model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        self.model.index(tokens, show_progress=False)

    def rank(self, query):
        tokens = bm25s.tokenize(
            [query], stopwords=self.stopwords, stemmer=self.stemmer, show_progress=False
        )
        k = min(200, len(self.passages))
        docs, _scores = self.model.retrieve(tokens, k=k, show_progress=False)
        return [self.passages[i][0] for i in docs[0]]


def cauce_rank(base, corpus, messages):
    body = json.dumps({"messages": messages, "top_k": DEPTH}).encode()
    request = urllib.request.Request(
        f"{base}/v1/search", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as err:
        sys.exit(f"eval: /v1/search answered {err.code}: {err.read().decode()}")
    root = str(corpus).rstrip("/") + "/"
    ranked = []
    for result in answer["results"]:
        location = result["location"].split("#", 1)[0]
        ranked.append(location[len(root) :] if location.startswith(root) else location)
    return ranked


def distinct(ranked):
    seen, out = set(), []
    for page in ranked:
        if page not in seen:
            seen.add(page)
            out.append(page)
    return out


def scores(ranked_pages, relevant):
    top = ranked_pages[:DEPTH]
    first = next((i for i, p in enumerate(top) if p in relevant), None)
    dcg = sum(1 / math.log2(i + 2) for i, p in enumerate(top) if p in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), DEPTH)))
    return {
        "hit@1": float(first == 0),
        "hit@4": float(first is not None and first < 4),
        "mrr@10": 0.0 if first is None else 1 / (first + 1),
        "ndcg@10": dcg / ideal if ideal else 0.0,
    }


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows) if rows else 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--json")
    parser.add_argument("--language", choices=sorted(STOPWORDS), default="english")
    parser.add_argument(
        "--split",
        choices=["all", "tune", "held-out"],
        default="all",
        help="tune: the even-numbered questions, to tune parameters on; held-out: the odd ones, to report",
    )
    args = parser.parse_args()
    corpus = pathlib.Path(args.corpus)
    questions = [
        json.loads(line)
        for line in pathlib.Path(args.questions).read_text().splitlines()
        if line.strip()
    ]
    if args.split != "all":
        keep = 0 if args.split == "tune" else 1
        questions = [q for i, q in enumerate(questions) if i % 2 == keep]
    reference = Reference(corpus, args.language)
    rows = []
    for q in questions:
        previous = q.get("previous", [])
        messages = previous + [{"role": "user", "content": q["question"]}]
        relevant = set(q["relevant"])
        cauce = cauce_rank(args.base, corpus, messages)
        query = " ".join(
            [m["content"] for m in previous if m["role"] == "user"] + [q["question"]]
        )
        ref = distinct(reference.rank(query))
        row = {"id": q["id"], "follow_up": bool(previous)}
        for key, value in scores(distinct(cauce), relevant).items():
            row[f"cauce {key}"] = value
        row["cauce hit@4 sources"] = float(any(p in relevant for p in cauce[:4]))
        for key, value in scores(ref, relevant).items():
            row[f"reference {key}"] = value
        rows.append(row)
    report(rows, len(reference.passages))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


def report(rows, reference_passages):
    follow = [r for r in rows if r["follow_up"]]
    print(
        f"{len(rows)} questions ({len(follow)} follow-ups); "
        f"reference: {reference_passages} passages of {PASSAGE_WORDS} words"
    )
    print()
    print("| | questions | hit@1 | hit@4 | hit@4 (sources) | MRR@10 | nDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    for name, subset in (("all", rows), ("follow-ups", follow)):
        for system in ("cauce", "reference"):
            sources = (
                f"{mean(subset, 'cauce hit@4 sources'):.3f}" if system == "cauce" else ""
            )
            print(
                f"| {system} ({name}) | {len(subset)} "
                f"| {mean(subset, f'{system} hit@1'):.3f} "
                f"| {mean(subset, f'{system} hit@4'):.3f} | {sources} "
                f"| {mean(subset, f'{system} mrr@10'):.3f} "
                f"| {mean(subset, f'{system} ndcg@10'):.3f} |"
            )


if __name__ == "__main__":
    main()
