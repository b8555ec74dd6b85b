"""README's benchmark figures, rendered from the committed runs in ``bench/results/``: anyone can regenerate them,
and ``tests/test_readme_figures.py`` fails when a figure in README's "Benchmarks" section has no committed source.

Each block of the section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` and is exactly what
``BLOCKS[NAME]`` renders: the command that produced the results file (as recorded in the file), the file, when,
at which commit and under what load, then the table. Text outside the markers carries no measured figures.

    python bench/tables.py            # print every block
    python bench/tables.py --write    # replace the blocks in README.md
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import RESULTS_DIR, describe  # noqa: E402

README = REPO / "README.md"
SECTION = "## Benchmarks"

# Targets as the issues that asked for these benchmarks set them (relay fan-out: issue 2; join: issue 5). The
# delivery target applies to both fan-out points README has always judged (MDU 431 x 8, negotiated MTU x 64).
FANOUT_TARGET_LINKS = 8
FANOUT_TARGET_DELIVERED = 0.995
FANOUT_TARGET_RATIO = 0.8
FANOUT_TARGET_P99_MS = 20.0
FANOUT_LARGE_LINKS = 64
JOIN_TARGET_MEMBERS = 16
JOIN_TARGET_P95_S = 1.5


class FigureError(Exception):
    """A results file is missing, malformed or was not written by the command it records."""


def load(name: str) -> dict[str, Any]:
    """The committed run ``RESULTS_DIR/NAME.json``; its recorded command (run from the repository root) must be
    the one that wrote it there, so the command README shows beside a table is the one that reproduces it."""
    path = RESULTS_DIR / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FigureError(f"{path.name}: {exc}") from exc
    command = doc.get("machine", {}).get("command")
    if not command:
        raise FigureError(f"{path.name}: no machine block with the command that produced it")
    written = command[command.index("--json") + 1] if "--json" in command[:-1] else None
    if written is None or Path(written).as_posix() != f"bench/results/{name}.json":
        raise FigureError(f"{path.name}: recorded command {shlex.join(command)!r} does not write it")
    return doc


def source(name: str, doc: dict[str, Any]) -> str:
    """The line under a block's heading: command, file, date, commit, load."""
    m = doc["machine"]
    rel = f"bench/results/{name}.json"
    load_start, load_end = m["load_average_start"][0], m["load_average_end"][0]
    commit = m["git_commit"][:10] + (" with uncommitted changes" if m["git_dirty"] else "")
    return (f"`{shlex.join(m['command'])}` → [`{rel}`]({rel}); {m['started_utc'][:16].replace('T', ' ')} UTC, "
            f"commit `{commit}`, load average {load_start:.2f} → {load_end:.2f} (1 min, start → end).")


def table(header: list[str], align: str, rows: list[list[str]]) -> str:
    """A markdown table; ``align`` has one letter per column: ``r`` right, ``l`` left."""
    marks = {"r": "---:", "l": ":--"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pct(fraction: float) -> str:
    return "100 %" if fraction == 1 else f"{fraction * 100:.2f} %"


def num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# ---- the blocks --------------------------------------------------------------------------------------------


def machine_block() -> str:
    """The machine of every committed run (one line when they agree), and the span of dates they were taken."""
    # Only the runs behind the tables: other records there (the suite's stability record) are kept
    # with their own section of the README.
    docs = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json")) if p.stem in BLOCKS}
    if not docs:
        raise FigureError(f"no results in {RESULTS_DIR}")
    machines: dict[str, list[str]] = {}
    for name, doc in docs.items():
        machines.setdefault(describe(doc["machine"]), []).append(name)
    starts = sorted(doc["machine"]["started_utc"] for doc in docs.values())
    ends = sorted(doc["machine"]["finished_utc"] for doc in docs.values())
    span = f"{starts[0][:16].replace('T', ' ')} – {ends[-1][:16].replace('T', ' ')} UTC"
    if len(machines) == 1:
        return f"Machine for every table: {next(iter(machines))}. Runs taken {span}."
    lines = [f"Runs taken {span} on these machines:", ""]
    lines += [f"- {desc}: {', '.join(names)}" for desc, names in machines.items()]
    return "\n".join(lines)


def relay_fanout() -> str:
    doc = load("relay_fanout")
    rows = []
    for r in doc["runs"]:
        raw, disp = r["raw"], r["dispatcher"]
        lat = (f"{num(disp['added_latency_ms_p50'])} / {num(disp['added_latency_ms_p99'])}"
               if disp.get("added_latency_ms_p50") is not None else "–")
        rows.append([str(r["mdu"]), str(r["subscribers"]), num(raw["cpu_us_per_forward"]),
                     pct(raw["delivered_fraction"]), num(disp["cpu_us_per_forward"]), pct(disp["delivered_fraction"]),
                     lat, num(r["ratio"], 2), "yes" if r["harness_limited"] else "no"])
    out = [source("relay_fanout", doc), "",
           f"{doc['offered_bps'] / 1e6:g} Mbit/s offered, {doc['seconds']:g} s per point, "
           f"{'median' if doc['repeat'] > 1 else 'one run'} of {doc['repeat']} (worst delivery).", "",
           table(["MDU", "links", "naive µs/fwd", "naive delivered", "dispatcher µs/fwd", "dispatcher delivered",
                  "added latency p50 / p99 ms", "ratio", "harness-limited"], "rrrrrrrrl", rows)]
    small = [r for r in doc["runs"] if r["mdu"] == min(x["mdu"] for x in doc["runs"])
             and r["subscribers"] == FANOUT_TARGET_LINKS]
    large = [r for r in doc["runs"] if r["mdu"] == max(x["mdu"] for x in doc["runs"])
             and r["subscribers"] == FANOUT_LARGE_LINKS]
    targets = []
    if small:
        r = small[0]
        d = r["dispatcher"]
        p99 = d["added_latency_ms_p99"]
        targets.append(
            f"MDU {r['mdu']}, {FANOUT_TARGET_LINKS} links — delivered {pct(d['delivered_fraction'])} "
            f"(≥ {FANOUT_TARGET_DELIVERED * 100:g} %: {met(d['delivered_fraction'] >= FANOUT_TARGET_DELIVERED)}), "
            f"ratio {num(r['ratio'], 2)} (≥ {FANOUT_TARGET_RATIO:g}: "
            f"{met(r['ratio'] is not None and r['ratio'] >= FANOUT_TARGET_RATIO)}), "
            f"p99 {num(p99)} ms (≤ {FANOUT_TARGET_P99_MS:g} ms: {met(p99 is not None and p99 <= FANOUT_TARGET_P99_MS)})")
    if large:
        r = large[0]
        delivered = r["dispatcher"]["delivered_fraction"]
        targets.append(f"negotiated MTU ({r['mdu']}), {FANOUT_LARGE_LINKS} links — delivered {pct(delivered)} "
                       f"(≥ {FANOUT_TARGET_DELIVERED * 100:g} %: {met(delivered >= FANOUT_TARGET_DELIVERED)})")
    if targets:
        out += ["", "Targets: " + "; ".join(targets) + "."]
    return "\n".join(out)


def relay_engine() -> str:
    doc = load("relay_engine")
    rows = [[f"{r['pub_mdu']} → {r['mdu']}", str(r["subscribers"]), num(r["engine_cpu_us_per_forward"], 2),
             num(r["engine_cpu_us_per_ingress_fragment"], 2), f"{r['added_vs_rns_send'] * 100:.1f} %", str(r["drops"])]
            for r in doc["runs"]]
    return "\n".join([
        source("relay_engine", doc), "",
        f"{doc['seconds']:g} s of media per point, best of {doc['repeat']} runs, loop cost subtracted.", "",
        table(["publisher → subscriber MDU", "subscribers", "µs per forward", "µs per ingress fragment",
               "of a bare RNS send (60 µs)", "drops"], "rrrrrr", rows)])


def join_latency() -> str:
    doc = load("join_latency")
    rows = [[str(r["members"]), str(r["joins"]), f"{r['join_to_first_frame_s_p50'] * 1000:.0f} ms",
             f"{r['join_to_first_frame_s_p95'] * 1000:.0f} ms", f"{r['join_to_first_keyframe_s_p95'] * 1000:.0f} ms",
             f"{r['commit_to_all_members_s_p50'] * 1000:.0f} ms"] for r in doc["runs"]]
    out = [source("join_latency", doc), "",
           f"{doc['kbps']:g} kbit/s media, {doc['gap_s']:g} s between joins, each joiner removed after its "
           "measurement.", "",
           table(["members", "joins", "join → first frame p50", "p95", "join → first keyframe p95",
                  "commit → all members on the new epoch p50"], "rrrrrr", rows)]
    target = [r for r in doc["runs"] if r["members"] == JOIN_TARGET_MEMBERS]
    if target:
        p95 = target[0]["join_to_first_frame_s_p95"]
        out += ["", f"Target: join → first frame ≤ {JOIN_TARGET_P95_S:g} s p95 with {JOIN_TARGET_MEMBERS} members — "
                    f"{p95 * 1000:.0f} ms, {met(p95 <= JOIN_TARGET_P95_S)}."]
    return "\n".join(out)


def loss_recovery_rns() -> str:
    doc = load("loss_recovery_rns")
    if not doc["rns"]:
        raise FigureError("bench/results/loss_recovery_rns.json is a simulated run, not --rns")
    by_loss: dict[float, dict[bool, dict[str, Any]]] = {}
    for r in doc["runs"]:
        by_loss.setdefault(r["loss_percent"], {})[r["recovery"]] = r
    rows = []
    for loss, pair in sorted(by_loss.items()):
        on, off = pair[True], pair[False]
        rows.append([f"{loss:g} %", f"{pct(on['frames_completed_fraction'])} / {pct(off['frames_completed_fraction'])}",
                     f"{pct(on['keyframes_completed_fraction'])} / {pct(off['keyframes_completed_fraction'])}",
                     num(on["retransmissions_per_lost_packet"], 2) if loss else "–",
                     f"{on['added_latency_ms_p99']:.0f} / {off['added_latency_ms_p99']:.0f} ms",
                     f"{on['keyframe_requests_per_min']:.0f} / {off['keyframe_requests_per_min']:.0f}"])
    return "\n".join([
        source("loss_recovery_rns", doc), "",
        f"Real RNS on loopback, {doc['seconds']:g} s of media per point, MDU {doc['mdu']}; each cell is recovery "
        "on / off, measured in the same run.", "",
        table(["loss", "frames complete", "keyframes complete", "repairs per lost packet", "added latency p99",
               "keyframe requests/min"], "rrrrrr", rows)])


def mls_ops() -> str:
    doc = load("mls_ops")
    rows = [[str(r["members"]), num(r["commit_add_ms"], 2), num(r["process_add_ms"], 2), num(r["join_ms"], 2),
             num(r.get("commit_remove_ms"), 2), num(r.get("process_remove_ms"), 2), num(r.get("public_follow_ms"), 2),
             f"{r['welcome_bytes']:,}"] for r in doc["results"]]
    out = [source("mls_ops", doc), "",
           f"Suite {doc['suite']}, ms (mean over ≥ {doc['seconds_per_case']:g} s per case).", "",
           table(["members", "commit Add", "process Add", "join (Welcome)", "commit Remove", "process Remove",
                  "relay follows a commit", "Welcome bytes"], "rrrrrrrr", rows)]
    up = doc["upstream"]
    largest = max(doc["results"], key=lambda r: r["members"])
    if largest.get("process_remove_ms") is not None:
        out += ["", f"For comparison, OpenMLS (Rust) quotes a join of ~{up['openmls_join_ms']:g} ms and a 128-member "
                    f"rekey of ~{up['openmls_rekey_128_ms']:g} ms; processing a Remove in a {largest['members']}-member "
                    f"group takes {largest['process_remove_ms']:.1f} ms here."]
    return "\n".join(out)


def _ops_table(ops: dict[str, float]) -> str:
    return table(["operation", "ops/s", "µs per op"], "lrr",
                 [[f"`{k}`", f"{v:,.0f}", f"{1e6 / v:,.1f}"] for k, v in ops.items()])


def mls_primitives() -> str:
    doc = load("mls_primitives")
    tree = set(load("mls_tree")["ops_per_second"])
    ops = {k: v for k, v in doc["ops_per_second"].items() if k not in tree}
    return "\n".join([source("mls_primitives", doc), "",
                      f"Suite {doc['suite']}; the tree figures this command also prints are in the next table.", "",
                      _ops_table(ops)])


def mls_tree() -> str:
    doc = load("mls_tree")
    return "\n".join([source("mls_tree", doc), "", f"Suite {doc['suite']}, full trees.", "",
                      _ops_table(doc["ops_per_second"])])


def media_frames() -> str:
    doc = load("media_frames")
    sframe = [[r["suite"], f"{r['size']:,}", num(1e6 / r["seal_per_s"]), num(1e6 / r["open_per_s"])]
              for r in doc["runs"] if r["case"] == "sframe"]
    pipe = [[f"{r['mdu']:,}", f"{r['size']:,}", f"{r['frames_per_s']:,.0f}", num(r["packets_per_frame"]),
             num(r["us_per_packet"])] for r in doc["runs"] if r["case"] == "pipeline"]
    return "\n".join([
        source("media_frames", doc), "",
        "One core, single-threaded.", "",
        table(["SFrame suite", "frame bytes", "seal µs", "open µs"], "lrrr", sframe), "",
        table(["MDU", "frame bytes", "frames/s (seal → packets → open)", "packets per frame",
               "µs per packet"], "rrrrr", pipe)])


BLOCKS: dict[str, Callable[[], str]] = {
    "machine": machine_block,
    "relay_fanout": relay_fanout,
    "relay_engine": relay_engine,
    "join_latency": join_latency,
    "loss_recovery_rns": loss_recovery_rns,
    "mls_ops": mls_ops,
    "mls_primitives": mls_primitives,
    "mls_tree": mls_tree,
    "media_frames": media_frames,
}


# ---- README ------------------------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", re.S)


def marked(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"


def section(readme: str) -> str:
    """README's Benchmarks section (up to the next level-2 heading)."""
    start = readme.find(f"\n{SECTION}\n")
    if start < 0:
        raise FigureError(f"README has no {SECTION!r} section")
    end = readme.find("\n## ", start + 1)
    return readme[start:] if end < 0 else readme[start:end]


def problems(readme: str) -> list[str]:
    """Why README's Benchmarks section is not what the committed results render to (empty when it is)."""
    text = section(readme)
    found = {m.group(1): m.group(2) for m in _BLOCK_RE.finditer(text)}
    out = []
    for name, render in BLOCKS.items():
        try:
            body = render()
        except (FigureError, KeyError, TypeError, ValueError) as exc:
            out.append(f"{name}: cannot render from bench/results/: {exc!r}")
            continue
        if name not in found:
            out.append(f"{name}: no <!-- bench:{name} --> block in README")
        elif found[name] != body:
            out.append(f"{name}: README differs from `python bench/tables.py` (run it with --write)")
    out += [f"{name}: README block has no renderer" for name in found if name not in BLOCKS]
    outside = _BLOCK_RE.sub("", text)
    out += [f"table line with no committed source: {line!r}" for line in outside.splitlines()
            if line.lstrip().startswith("|")]
    return out


def write(readme_path: Path = README) -> None:
    """Replace every marked block of README's Benchmarks section with its rendering."""
    readme = readme_path.read_text()
    text = section(readme)
    new = _BLOCK_RE.sub(lambda m: marked(m.group(1), BLOCKS[m.group(1)]()), text)
    readme_path.write_text(readme.replace(text, new))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the marked blocks in README.md")
    args = ap.parse_args(argv)
    if args.write:
        write()
        left = problems(README.read_text())
        for p in left:
            print(p, file=sys.stderr)
        return 1 if left else 0
    print("\n\n".join(marked(name, render()) for name, render in BLOCKS.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
