"""The README's screenshots, taken from a real demo run: every tab, the demo's timeline and
its end, as PNG.

    .venv/bin/python -m tests.tui.render_screenshots [--out docs/screenshots] [--keep-svg]

Starts a small real demo (orchestrator.demo.Demo: real `syncthing serve` processes and
`twinsync run` daemons on 127.0.0.1, in a temporary directory removed after), opens the
real app (tui.app.make_app) on node1's live home as `twinsync demo` does, drives it headless
with Textual's pilot at 120x40 while the demo runs, and saves an SVG of each state with the
app's own screenshot API (`App.save_screenshot`). Each SVG is then rendered to PNG with
Debian's headless Chromium (`apt-get install chromium`). Takes about two minutes.

Output: nodes.png (once node3 is cut off: the timeline under the tabs says so), ask.png
(the Ask dialog answered), queue.png (the demo's frame conflict selected, its diff shown),
snapshots.png (one verified), frames.png (notes/shared, the frame two nodes edited, and
its revisions), metrics.png and ended.png (the demo's results, its nodes stopped). A state
that does not come within its deadline stops the script with what it waited for: nothing
half-shown is saved.

Nothing leaves the machine: each SVG is inlined into a local HTML file whose web-font
URLs are removed (the system's DejaVu Sans Mono draws the text), Chromium opens it from
file:// and resolves no host name but 127.0.0.1, with a fresh profile removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from orchestrator.demo import Demo
from orchestrator.logfile import logs_to
from tests.tui.helpers import until
from tui.app import TwinsyncApp, make_app
from tui.ask import AskScreen

ROOT = Path(__file__).resolve().parents[2]
SIZE = (120, 40)
CHROMIUM = "/usr/bin/chromium"
FONT = '"DejaVu Sans Mono", "Liberation Mono", monospace'
#: The shots, in the order the demo's run brings them.
SHOTS = ("nodes", "ask", "queue", "snapshots", "frames", "metrics", "ended")
NODES = 3
#: Seconds of reasoning: the incidents come at 20%, 35%, 50% and 65% of it, and the shots
#: of every tab are taken between the cut-off and the end.
DURATION = 60
#: Seconds any one state may take to come on a busy machine.
WAIT = 90


def _text(app: TwinsyncApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())  # the dialog on top, when one is


async def _select(pilot, table_id: str, key: str) -> None:
    """Put the cursor of table `table_id` on the row `key`."""
    table = pilot.app.query_one(f"#{table_id}")
    keys = [row.key.value for row in table.ordered_rows]
    table.move_cursor(row=keys.index(key), animate=False)
    await pilot.pause(0.3)


async def drive(app: TwinsyncApp, pilot, shoot: Callable[[str], None]) -> None:
    """The states of SHOTS, each waited for on the live app, then shot."""
    timeline = "#timeline"
    await until(pilot, lambda: "cut off from the others" in _text(app, timeline), "node3 cut off", WAIT)
    nodes = app.pane("nodes")
    await until(pilot, lambda: len(getattr(nodes, "rows", {})) == NODES, "every node's fingerprint", WAIT)
    await _select(pilot, "nodes-table", "node1")
    shoot("nodes")

    await pilot.press("k")
    await until(pilot, lambda: isinstance(app.screen, AskScreen), "the Ask dialog", WAIT)
    await pilot.press(*"plan", "space", *"the", "space", *"week", "enter")
    waiting = ("This node answers when", "Asking about")  # the dialog's hint, then while it asks
    await until(pilot, lambda: not isinstance(app.screen, AskScreen)
                or not _text(app, "#ask-answer").startswith(waiting), "the answer", WAIT)
    if not isinstance(app.screen, AskScreen):
        raise AssertionError("the demo ended before the network answered; run again")
    shoot("ask")
    await pilot.press("escape")

    await pilot.press("2")
    queue = app.pane("queue")
    conflict = await until(pilot, lambda: next((k for k, e in queue.entries.items() if e.kind == "conflict"), None),
                           "the frame conflict in the queue", WAIT)
    await _select(pilot, "queue-table", conflict)
    await until(pilot, lambda: (queue.shown_detail or ())[:1] == ("conflict",) and queue.shown_detail[2],
                "the conflict's diff", WAIT)
    shoot("queue")

    await pilot.press("3")
    snapshots = app.pane("snapshots")
    await until(pilot, lambda: snapshots.infos, "a snapshot", WAIT)
    await pilot.press("v")
    await until(pilot, lambda: "ok" in snapshots.verdicts.values(), "the snapshot verified", WAIT)
    shoot("snapshots")

    await pilot.press("4")
    frames = app.pane("frames")
    shared = await until(pilot, lambda: next((k for k, e in frames.entries.items() if e.id == "notes/shared"), None),
                         "notes/shared among the frames", WAIT)
    await _select(pilot, "frames-table", shared)
    await until(pilot, lambda: frames.log_of == "notes/shared" and len(frames.revisions) > 1,
                "the revisions of notes/shared", WAIT)
    shoot("frames")

    await pilot.press("5")
    await until(pilot, lambda: "…" not in _text(app, "#value-convergence"), "the metrics", WAIT)
    shoot("metrics")

    await until(pilot, lambda: "are stopped" in _text(app, timeline), "the demo's end, its nodes stopped", 4 * WAIT)
    shoot("ended")


def capture_svgs(work: Path, names: list[str], nodes: int = NODES, duration: float = DURATION) -> list[Path]:
    """A real demo in `work`, the app on its node1, the SVG of each of `names` (in SHOTS)."""
    demo = Demo(work / "demo", nodes)
    saved: list[Path] = []
    failure: list[BaseException] = []

    def finish() -> None:
        try:
            demo.finish(duration, threading.Event())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    async def main() -> None:
        app = make_app(demo.nodes[0].home, refresh_s=2.0, demo=demo.timeline)
        app.animation_level = "none"

        def shoot(name: str) -> None:
            if name in names:
                saved.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(work))))
                print(f"shot {name} at t={demo.timeline.view().elapsed:.0f} s", flush=True)

        async with app.run_test(size=SIZE) as pilot:
            worker.start()
            await drive(app, pilot, shoot)
            await pilot.press("q")

    worker = threading.Thread(target=finish, name="demo")
    print(f"starting a {nodes}-node demo in {work}; its log lines go to {work / 'demo.log'}", flush=True)
    with logs_to(work / "demo.log"):
        try:
            demo.setup()
            asyncio.run(main())
        finally:
            demo.close()
            if worker.is_alive():
                worker.join()
    if failure:
        raise RuntimeError(f"the demo failed: {failure[0]}") from failure[0]
    return saved


def _viewbox(svg: str) -> tuple[int, int]:
    match = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    if match is None:
        raise ValueError("the SVG has no viewBox")
    return math.ceil(float(match[1])), math.ceil(float(match[2]))


def offline_svg(svg: str) -> str:
    """The SVG without its web fonts (@font-face rules fetching Fira Code from a CDN)."""
    svg = re.sub(r"@font-face\s*\{[^}]*\}", "", svg)
    return svg.replace("font-family: Fira Code, monospace;", f"font-family: {FONT};")


def html_page(svg: str, width: int, height: int) -> str:
    svg = svg.replace("<svg ", f'<svg width="{width}" height="{height}" ', 1)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>"
            "html, body { margin: 0; padding: 0; background: transparent; overflow: hidden; }"
            "svg { display: block; }</style></head>\n"
            f"<body>{svg}</body></html>\n")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def render_png(svg_path: Path, png: Path, chromium: str, work: Path) -> tuple[int, int]:
    svg = svg_path.read_text(encoding="utf-8")
    width, height = _viewbox(svg)
    page = work / f"{svg_path.stem}.html"
    page.write_text(html_page(offline_svg(svg), width, height), encoding="utf-8")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=work))
    png.unlink(missing_ok=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
           "--default-background-color=00000000",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
           page.as_uri()]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({result.returncode}) for {svg_path.name}:\n{result.stderr[-2000:]}")
    return png_size(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tui.render_screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="where the PNGs go (default: docs/screenshots)")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"the browser (default: {CHROMIUM})")
    parser.add_argument("--keep-svg", action="store_true", help="also keep the SVGs beside the PNGs")
    parser.add_argument("--only", default=",".join(SHOTS), help=f"comma-separated, of {', '.join(SHOTS)}")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(SHOTS)
    if unknown:
        parser.error(f"unknown screenshot(s) {', '.join(sorted(unknown))}")
    if not Path(args.chromium).exists():
        parser.error(f"{args.chromium} not found: install Debian's chromium (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twinsync-shots-") as tmp:
        work = Path(tmp)
        for svg in capture_svgs(work, names):
            png = args.out / f"{svg.stem}.png"
            width, height = render_png(svg, png, args.chromium, work)
            if args.keep_svg:
                shutil.copyfile(svg, args.out / svg.name)
            print(f"{png}  {width}x{height}  {png.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
