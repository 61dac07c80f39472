"""Reading verdicts out of realistic replies: a hedged or unreadable reply abstains, never a default label."""

import pytest

from vlmbench.judges.api.parsing import parse_label

PAIR = ["FIRST", "SECOND", "NEITHER"]
SIDES = ["LEFT", "RIGHT"]
CLASSES = ["fallen", "slightly tilted", "tilted", "upright"]

CASES = [
    # (reply, labels, expected label or None, expected reason prefix)
    ("FIRST", PAIR, "FIRST", None),
    ("second", PAIR, "SECOND", None),
    ("**SECOND**", PAIR, "SECOND", None),
    ("Answer: NEITHER", PAIR, "NEITHER", None),
    ("The left pole leans by about 30 degrees. The right pole is nearly vertical.\n\n**Answer:** RIGHT", SIDES,
     "RIGHT", None),
    ("Let me think step by step.\n1. In FIRST the pole has fallen.\n2. In SECOND it stands.\nFinal answer - SECOND",
     PAIR, "SECOND", None),
    ("RIGHT. The pole on the right is upright while the left one has fallen over.", SIDES, "RIGHT", None),
    ("Looking at both, the pole on the left is clearly more vertical, so I pick LEFT.", SIDES, "LEFT", None),
    ("## Verdict: `left`", SIDES, "LEFT", None),
    ("Answer: LEFT or RIGHT, it is hard to say", SIDES, None, "hedged"),
    ("Both look about the same; I cannot tell which is better.", SIDES, None, "hedged"),
    ("The left one is better than the right one.", SIDES, None, "hedged"),
    ("Answer: the pole", SIDES, None, "unparseable"),
    ("I'm sorry, I can't help with that request.", SIDES, None, "unparseable"),
    ("{\"choices\": [", SIDES, None, "unparseable"),
    ("", SIDES, None, "empty"),
    (None, SIDES, None, "empty"),
    ("Answer: slightly tilted", CLASSES, "slightly tilted", None),
    ("The pole leans a little.\nAnswer: tilted", CLASSES, "tilted", None),
    ("yes", ["yes", "no"], "yes", None),
    ("No, the pole has fallen over.", ["yes", "no"], "no", None),
    ("There is no pole standing here, but yes the cart is centred.", ["yes", "no"], None, "unparseable"),
    ("B", ["A", "B"], "B", None),
    ("A cart is shown in both pictures.", ["A", "B"], None, "unparseable"),
    ("2", ["1", "2"], "2", None),
    ("Image 1 has a tilted pole and image 2 an upright one.", ["1", "2"], None, "unparseable"),
]


@pytest.mark.parametrize(("reply", "labels", "label", "reason"), CASES)
def test_parse_label(reply, labels, label, reason):
    parsed = parse_label(reply, labels)
    assert parsed.label == label
    if reason is None:
        assert parsed.reason is None
    else:
        assert parsed.reason.startswith(reason), parsed.reason
