"""PII redaction (studio_curate_pii): planted findings of every kind in realistic sentences, near-miss
negatives (versions, dates, ISBNs, order numbers, arithmetic, slices), measured precision/recall,
and the op's redact/drop behaviour."""
from __future__ import annotations

from pathlib import Path

import pytest

from studio.curation.op_base import OpContext, OpInput
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

from conftest import realdata_file


def make_input(tmp_path: Path, records: list[Record]) -> OpInput:
    ws = Workspace.init(tmp_path / "ws")
    info = ws.write_version("t", records, {"name": "t"})
    return OpInput(ws.root / "data" / "t" / "versions" / info.id / "data.arrow")


def run_pii(data: OpInput, **config):
    op = get_host().items("curation_op")["pii_redact"]
    return op.run(data, op.config_model(**config), OpContext())


# Secrets are assembled at run time so the source holds no literal key-shaped strings.
OPENAI = "sk-" + "proj-" + "4fG7hJ2kL9mN3pQ8rS1tU6vW0xY5zA2b"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB = "ghp" + "_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
SLACK = "xoxb" + "-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
BEARER = "9f8e7d6c5b4a3928" + "1706f5e4d3c2b1a0"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GENERIC = "Zx9Qw8Er7Ty6Ui5Op4As3"
PASSWORD = "hK8s2Lq9Zr4Vt7Wn3Yp6"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9\n-----END RSA PRIVATE KEY-----"

# (text, [(kind, exact value)]) — realistic sentences, each planted finding listed.
POSITIVES = [
    ("Please send the signed contract to maria.gonzalez@acme-corp.com by Friday.",
     [("email", "maria.gonzalez@acme-corp.com")]),
    ("For the newsletter, write to j.smith+news@mail.example.org or ops_team@sub.domain.co.uk.",
     [("email", "j.smith+news@mail.example.org"), ("email", "ops_team@sub.domain.co.uk")]),
    ("Call our support line at (415) 555-0132 between 9 and 5.", [("phone", "(415) 555-0132")]),
    ("My cell is 212-555-0198, the office is 312.555.0147.", [("phone", "212-555-0198"), ("phone", "312.555.0147")]),
    ("Toll free: 1-800-555-0199.", [("phone", "1-800-555-0199")]),
    ("From abroad dial +44 20 7946 0958 or +49 30 12345678.", [("phone", "+44 20 7946 0958"), ("phone", "+49 30 12345678")]),
    ("Our Mumbai desk: +91 98765 43210; US HQ +1 (650) 253-0000.", [("phone", "+91 98765 43210"), ("phone", "+1 (650) 253-0000")]),
    ("Phone number: 646-555-0110", [("phone", "646-555-0110")]),
    ("The server at 93.184.216.34 stopped responding; block 185.199.108.153 too.",
     [("ip_address", "93.184.216.34"), ("ip_address", "185.199.108.153")]),
    ("Its IPv6 address is 2a00:1450:4001:81c::200e and the resolver 2606:4700:4700::1111.",
     [("ip_address", "2a00:1450:4001:81c::200e"), ("ip_address", "2606:4700:4700::1111")]),
    ("My card number is 4111 1111 1111 1111, exp 12/26.", [("credit_card", "4111 1111 1111 1111")]),
    ("It was charged to 5500-0000-0000-0004 yesterday.", [("credit_card", "5500-0000-0000-0004")]),
    ("Amex 3782 822463 10005 and Discover 6011111111111117 are on file.",
     [("credit_card", "3782 822463 10005"), ("credit_card", "6011111111111117")]),
    (f"export OPENAI_API_KEY={OPENAI}", [("secret", OPENAI)]),
    (f"aws_access_key_id = {AWS}", [("secret", AWS)]),
    (f"Use the token {GITHUB} to push.", [("secret", GITHUB)]),
    (f"SLACK_BOT_TOKEN: {SLACK}", [("secret", SLACK)]),
    (f"curl -H 'Authorization: Bearer {BEARER}' https://api.example.com", [("secret", BEARER)]),
    (f"The session cookie was {JWT}", [("secret", JWT)]),
    (f"my api key is {GENERIC}, keep it safe", [("secret", GENERIC)]),
    (f'DB_PASSWORD="{PASSWORD}"', [("secret", PASSWORD)]),
    (f"Here is the key:\n{PRIVATE_KEY}\nDo not share it.", [("secret", PRIVATE_KEY)]),
    ("Email bob@example.net or call 917-555-0123 from 8.8.8.8.",
     [("email", "bob@example.net"), ("phone", "917-555-0123"), ("ip_address", "8.8.8.8")]),
]

NEAR_MISSES = [
    "Upgrade to version 2.4.1.3 before Friday; Python 3.11.4 and numpy 1.26.4 are fine.",
    "See section 4.2.1.3 and chapter 10.1.2.4 of the manual.",
    "The book's ISBN is 978-0-306-40615-7 (ISBN-10: 0-306-40615-2).",
    "Order #4411-5523-9876 shipped on 2023-10-15 and arrives 15/10/2023.",
    "Order number 555-123-4567 was refunded; tracking no. 415-555-0132.",
    "Invoice 2023-0042-7781 covers January to March 2024.",
    "The population grew from 1,234,567,890 in 1990 to 1,400,000,000 in 2020.",
    "Room 101-202-3030 is on the first floor.",
    "The test card 4111 1111 1111 1112 fails the Luhn check, and 1234 5678 9012 3456 is no card.",
    "Compute 355909190063 - 746 = 355909189317, then 12 +960397912423686.",
    "The result is 4212883012996 after adding 1646615806005.",
    "Local addresses like 192.168.1.10, 10.0.0.1 and 127.0.0.1 are not personal.",
    "In Python, a[1::2] and b[::3] slice lists; std::vector<int> is C++.",
    "The meeting is at 12:30:45; the MAC address is 00:1A:2B:3C:4D:5E.",
    "Set max_tokens=2048 and the token count stays under 1500; the password is hunter2.",
    "api_key = os.environ['OPENAI_API_KEY'] reads the key from the environment.",
    "Follow @openai on social media, or mail user@localhost on the test box.",
    "The SHA-256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.",
    "Call extension 4567, or dial 5551234567 from the lobby phone.",
    "Use scikit-learn (sk-learn) version 1.4 for this.",
]


def measure(texts_and_expected):
    from studio_curate_pii.detect import KINDS, find_pii

    kinds = frozenset(KINDS)
    tp = fp = fn = 0
    per_kind: dict[str, list[int]] = {k: [0, 0, 0] for k in KINDS}
    misses, false = [], []
    for text, expected in texts_and_expected:
        found = {(kind, text[a:b]) for a, b, kind, _ in find_pii(text, kinds)}
        want = set(expected)
        for item in found & want:
            per_kind[item[0]][0] += 1
        for item in found - want:
            per_kind[item[0]][1] += 1
            false.append(item)
        for item in want - found:
            per_kind[item[0]][2] += 1
            misses.append(item)
        tp += len(found & want)
        fp += len(found - want)
        fn += len(want - found)
    return tp, fp, fn, per_kind, misses, false


def test_planted_pii_precision_and_recall():
    corpus = POSITIVES + [(t, []) for t in NEAR_MISSES]
    tp, fp, fn, per_kind, misses, false = measure(corpus)
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(f"\nPII planted: precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn}); per kind {per_kind}")
    assert not misses, misses
    assert not false, false
    assert precision == 1.0 and recall == 1.0
    for kind, (k_tp, _, _) in per_kind.items():
        assert k_tp >= 2, f"too few planted {kind} cases"


def test_no_pii_found_in_number_heavy_real_benchmarks():
    from studio_curate_pii.detect import KINDS, find_pii

    records = read_file(realdata_file("benchmarks/gsm8k_test.jsonl"), get_host().formats()).records
    records += read_file(realdata_file("benchmarks/HumanEval.jsonl.gz"), get_host().formats()).records
    found = [(text[a:b], kind) for r in records for text in [r.text()]
             for a, b, kind, _ in find_pii(text, frozenset(KINDS))]
    assert found == []  # 1,483 maths and code items: numbers, dates, slices, no personal data


def test_real_phone_numbers_and_emails_in_lima_are_found():
    from studio_curate_pii.detect import KINDS, find_pii

    records = read_file(realdata_file("lima/llamafactory_lima.json"), get_host().formats()).records
    found = [(text[a:b], kind) for r in records for text in [r.text()]
             for a, b, kind, _ in find_pii(text, frozenset(KINDS))]
    assert ("1-800-375-5283", "phone") in found  # the USCIS line in a LIMA answer
    assert sum(1 for _, kind in found if kind == "email") >= 5


def test_pii_redact_op_changes_rows_with_typed_placeholders(tmp_path):
    rows = [
        Record([Turn("system", "Support bot."), Turn("user", "I'm at maria@acme-corp.com, call (415) 555-0132."),
                Turn("assistant", "Thanks! I'll email maria@acme-corp.com and cc team@acme-corp.com.")]),
        Record([Turn("user", "What is 2+2?"), Turn("assistant", "4")]),
        Record([Turn("user", f"Why does {OPENAI} fail?")], [Turn("assistant", "Rotate that key now.")],
               [Turn("assistant", "Try card 4111 1111 1111 1111 instead.")]),
    ]
    data = make_input(tmp_path, rows)
    result = run_pii(data)
    assert all(result.keep) and set(result.changes) == {0, 2}
    change = result.changes[0]
    assert change.reason == "PII redacted"
    assert change.detail["counts"] == {"email": 3, "phone": 1}
    assert change.detail["where"] == ["messages[1]", "messages[2]"]
    turns = change.row["messages"]
    assert turns[0]["content"] == "Support bot."
    assert turns[1]["content"] == "I'm at <EMAIL>, call <PHONE>."
    assert turns[2]["content"] == "Thanks! I'll email <EMAIL> and cc <EMAIL>."
    pair = result.changes[2].row
    assert pair["messages"][0]["content"] == "Why does <SECRET> fail?"
    assert pair["rejected"][0]["content"] == "Try card <CREDIT_CARD> instead."
    assert pair["chosen"] == rows[2].to_row()["chosen"] and pair["kind"] == "preference"
    # Nothing personal leaks into the side table.
    assert "maria" not in repr(change.detail) and OPENAI not in repr(result.changes[2].detail)
    assert result.report["totals"] == {"email": 3, "phone": 1, "secret": 1, "credit_card": 1}
    assert result.report["rows_with_pii"] == 2


def test_pii_numbered_placeholders_kinds_and_drop(tmp_path):
    rows = [Record([Turn("user", "a@x.org wrote to b@y.org, then a@x.org again; see 93.184.216.34")])]
    data = make_input(tmp_path, rows)
    numbered = run_pii(data, placeholder="[{KIND}_{n}]")
    assert numbered.changes[0].row["messages"][0]["content"] == \
        "[EMAIL_1] wrote to [EMAIL_2], then [EMAIL_1] again; see [IP_ADDRESS_1]"
    only_ip = run_pii(data, kinds=["ip_address"], placeholder="<{kind}>")
    assert only_ip.changes[0].row["messages"][0]["content"] == \
        "a@x.org wrote to b@y.org, then a@x.org again; see <ip_address>"
    dropped = run_pii(data, action="drop")
    assert dropped.keep == [False] and not dropped.changes
    assert dropped.removals[0].reason == "contains PII"
    assert dropped.removals[0].detail["counts"] == {"email": 3, "ip_address": 1}
    private = make_input(tmp_path / "p", [Record([Turn("user", "ssh to 192.168.1.10")])])
    assert not run_pii(private).changes
    assert run_pii(private, include_private_ips=True).changes[0].row["messages"][0]["content"] == "ssh to <IP_ADDRESS>"
    with pytest.raises(ValueError, match="placeholder"):
        get_host().items("curation_op")["pii_redact"].config_model(placeholder="<{KIND")


# --- a larger seeded corpus: varied formats in varied sentences --------------------------------

TEMPLATES = [
    "Contact {} for details.", "You can reach me at {} any time.", "{}", "Logs show a request involving {} at noon.",
    "Hi team,\nplease use {} from now on.\nThanks!", "(see {})", "Old value: {}; new value pending.",
]


def _luhn_complete(partial: str) -> str:
    from studio_curate_pii.detect import luhn_ok

    for d in "0123456789":
        if luhn_ok(partial + d):
            return partial + d
    raise AssertionError


def generated_corpus(seed: int = 7, per_kind: int = 60):
    import ipaddress
    import random
    import string

    rnd = random.Random(seed)
    digits = lambda k: "".join(rnd.choice(string.digits) for _ in range(k))  # noqa: E731
    alnum = lambda k: "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(k))  # noqa: E731
    names = ["anna", "li.wei", "j.smith", "o_brien", "maria-jose", "k.tanaka", "priya", "dev+ops", "sam99"]
    domains = ["example.com", "mail.acme.org", "uni-bonn.de", "co.example.co.uk", "startup.io", "gov.example.gov"]

    def email():
        return f"{rnd.choice(names)}{rnd.choice(['', str(rnd.randint(1, 99))])}@{rnd.choice(domains)}"

    def nanp():
        return str(rnd.randint(2, 9)) + digits(2), str(rnd.randint(2, 9)) + digits(2), digits(4)

    def phone():
        a, e, n = nanp()
        return rnd.choice([f"({a}) {e}-{n}", f"{a}-{e}-{n}", f"{a}.{e}.{n}", f"1-{a}-{e}-{n}", f"+1 {a} {e} {n}",
                           f"+1 ({a}) {e}-{n}", f"+44 20 {digits(4)} {digits(4)}", f"+49 30 {digits(8)}",
                           f"+33 1 {digits(2)} {digits(2)} {digits(2)} {digits(2)}", f"+81 3-{digits(4)}-{digits(4)}",
                           f"+61 2 {digits(4)} {digits(4)}", f"+91 {digits(5)} {digits(5)}"])

    def ip():
        while True:
            if rnd.random() < 0.6:
                addr = ipaddress.IPv4Address(rnd.getrandbits(32))
            else:
                addr = ipaddress.IPv6Address((0x2A00 << 112) | rnd.getrandbits(100) << 12)
            if addr.is_global:
                return addr.compressed

    def card():
        prefix, length = rnd.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                     ("6011", 16)])
        number = _luhn_complete(prefix + digits(length - len(prefix) - 1))
        if length == 15:
            return rnd.choice([number, f"{number[:4]} {number[4:10]} {number[10:]}"])
        sep = rnd.choice(["", " ", "-"])
        return sep.join(number[i:i + 4] for i in range(0, 16, 4))

    def secret():
        kind = rnd.randrange(7)
        if kind == 0:
            return "sk-" + rnd.choice(["", "proj-"]) + alnum(40), None
        if kind == 1:
            return "AKIA" + "".join(rnd.choice(string.ascii_uppercase + string.digits) for _ in range(16)), None
        if kind == 2:
            return "ghp_" + alnum(36), None
        if kind == 3:
            return "hf_" + alnum(34), None
        value = alnum(24) + digits(2)
        if kind == 4:
            return value, f"Authorization: Bearer {value}"
        if kind == 5:
            return value, f"API_KEY={value}"
        return value, f'"client_secret": "{value}"'

    positives = []
    for make, kind in ((email, "email"), (phone, "phone"), (ip, "ip_address"), (card, "credit_card")):
        for _ in range(per_kind):
            value = make()
            positives.append((rnd.choice(TEMPLATES).format(value), [(kind, value)]))
    for _ in range(per_kind):
        value, text = secret()
        positives.append((rnd.choice(TEMPLATES).format(text or value), [("secret", value)]))

    def negative():
        y, m, d = rnd.randint(1950, 2030), rnd.randint(1, 12), rnd.randint(1, 28)
        return rnd.choice([
            f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m}.{d}.{y}", f"version {rnd.randint(1, 20)}.{rnd.randint(0, 9)}."
            f"{rnd.randint(0, 99)}.{rnd.randint(0, 999)}", f"v{rnd.randint(0, 9)}.{rnd.randint(0, 20)}.{rnd.randint(0, 50)}",
            f"ISBN 978-{rnd.randint(0, 9)}-{digits(3)}-{digits(5)}-{rnd.randint(0, 9)}", f"order #{digits(3)}-{digits(7)}",
            f"order no. {digits(3)}-{digits(3)}-{digits(4)}", f"{rnd.randint(1, 999)},{digits(3)},{digits(3)} people",
            f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}", f"${rnd.randint(1, 9)},{digits(3)}.{digits(2)}",
            f"{rnd.uniform(-90, 90):.4f}, {rnd.uniform(-180, 180):.4f}", f"pi is about 3.{digits(12)}",
            f"{digits(4)} {digits(4)} {digits(4)}", f"batch {digits(10)}", f"{rnd.randint(1, 9)}{digits(3)} x {digits(5)} = {digits(9)}",
            f"room 1{digits(2)}-{digits(3)}-{digits(4)}", f"token count {digits(4)}", f"commit {alnum(7).lower()}",
            f"section {rnd.randint(1, 9)}.{rnd.randint(1, 9)}.{rnd.randint(1, 9)}.{rnd.randint(1, 9)}",
        ])

    negatives = [(rnd.choice(TEMPLATES).format(negative()), []) for _ in range(per_kind * 5)]
    return positives + negatives


def test_generated_pii_corpus_precision_and_recall():
    corpus = generated_corpus()
    tp, fp, fn, per_kind, misses, false = measure(corpus)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"\nPII generated ({len(corpus)} texts): precision {precision:.3f} recall {recall:.3f} "
          f"(tp {tp}, fp {fp}, fn {fn}); per kind [tp, fp, fn] {per_kind}\n misses {misses[:5]}\n false {false[:5]}")
    assert precision >= 0.98
    assert recall >= 0.97
    for kind, (k_tp, _, k_fn) in per_kind.items():
        assert k_tp / (k_tp + k_fn) >= 0.9, kind
