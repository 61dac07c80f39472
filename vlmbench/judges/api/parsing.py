"""Reading a verdict out of a model's free-text reply.

A reply is read in this order, and the first rule that finds something decides:

1. the last verdict line (``Answer: X``, ``Final answer - X``, ``Verdict: X``, markdown allowed);
2. the whole reply, or its first line, being a label on its own (verdict first, reasoning after);
3. for labels that are words of four letters or more only: the last sentence naming a label.

Labels match case-insensitively as whole words, a longer label winning over one it contains.
A verdict that names two labels, or hedges ("cannot tell", "either", "unsure"), is no verdict:
the reply is an abstention with its reason, never a default label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERDICT = re.compile(r"^\W*(?:final\s+)?(?:answer|verdict|choice|decision|label)\s*\W*[:\-=]\s*(.*)$", re.I | re.M)
HEDGES = re.compile(r"\b(?:either|unsure|not sure|cannot (?:tell|determine|decide)|can't (?:tell|determine|decide)|"
                    r"unclear|impossible to (?:tell|say)|hard to (?:tell|say)|uncertain)\b", re.I)
MARKUP = re.compile(r"[*_`#>\[\]\"'“”‘’]")


@dataclass(frozen=True)
class Parsed:
    """The label read (None when the reply gives no clear one) and why not."""

    label: str | None
    reason: str | None = None


def _mentions(text: str, labels: list[str]) -> list[str]:
    """The distinct labels named in ``text``, longest first so 'slightly tilted' hides 'tilted'."""
    taken: list[tuple[int, int]] = []
    found = []
    for label in sorted(labels, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w-]){re.escape(label)}(?![\w-])", re.I)
        for m in pattern.finditer(text):
            if any(a <= m.start() and m.end() <= b for a, b in taken):
                continue
            taken.append(m.span())
            if label not in found:
                found.append(label)
    return found


def _decide(text: str, labels: list[str]) -> Parsed | None:
    named = _mentions(text, labels)
    if len(named) == 1 and not HEDGES.search(text):
        return Parsed(named[0])
    if len(named) > 1:
        return Parsed(None, "hedged answer: names several labels")
    if named:
        return Parsed(None, "hedged answer")
    return None


def _alone(line: str, labels: list[str]) -> str | None:
    """The label ``line`` consists of (allowing punctuation around it), if any."""
    core = re.sub(r"^[\W_]+|[\W_]+$", "", line)
    for label in labels:
        if core.lower() == label.lower():
            return label
    return None


def parse_label(reply: str | None, labels: list[str]) -> Parsed:
    """The verdict ``reply`` gives among ``labels`` (see the module docstring for the rules)."""
    if reply is None or not reply.strip():
        return Parsed(None, "empty reply")
    text = MARKUP.sub("", reply).strip()
    verdicts = VERDICT.findall(text)
    if verdicts:
        decided = _decide(verdicts[-1], labels)
        return decided or Parsed(None, "unparseable answer: the verdict line names no label")
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in (text, lines[0]):
        label = _alone(candidate, labels)
        if label is not None:
            return Parsed(label)
    for label in sorted(labels, key=len, reverse=True):  # "SECOND. The pole in ..."
        if re.match(rf"^\W*{re.escape(label)}\s*(?:[.,:;!)\-]|$)", lines[0], re.I):
            return Parsed(label)
    if all(len(label) >= 4 for label in labels):
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
        for sentence in reversed(sentences):
            decided = _decide(sentence, labels)
            if decided is not None:
                return decided
    return Parsed(None, "hedged answer" if HEDGES.search(text) else "unparseable answer: no label found")
