"""The README's screenshots: every tab of the real app, as PNG.

    .venv/bin/python -m tests.tui.render_screenshots [--out docs/screenshots] [--keep-svg]

Drives the real app (tui.app.make_app) headless with the fixed values of the snapshot
tests' fake service (tests/tui/fakes.py), at 120x36, saves an SVG of each tab with the
app's own screenshot API (`App.save_screenshot`), and renders each SVG to PNG with
Debian's headless Chromium (`apt-get install chromium`). Output: nodes.png, queue.png
(a frame conflict selected, its diff shown), snapshots.png (one verified), frames.png
(a frame's revisions), metrics.png and ask.png (the Ask dialog with an answer).

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
from pathlib import Path

from tests.tui.fakes import FakeService
from tui.app import make_app

ROOT = Path(__file__).resolve().parents[2]
SIZE = (120, 36)
CHROMIUM = "/usr/bin/chromium"
FONT = '"DejaVu Sans Mono", "Liberation Mono", monospace'
#: name -> (the tab's key, then the keys that bring it to the state shown)
SHOTS: dict[str, tuple[str, ...]] = {
    "nodes": ("1", "down", "down"),  # this node (laptop) selected: its fingerprint and folders
    "queue": ("2",),                  # the newest item, a frame conflict, with its diff
    "snapshots": ("3", "v", "down"),  # the first snapshot verified (its green "ok" off the cursor)
    "frames": ("4", "down"),          # notes/today and its revisions
    "metrics": ("5",),
    "ask": ("1", "k", *"plan", "space", *"the", "space", *"week", "enter"),  # the Ask dialog answered
}


async def _settled(pilot) -> None:
    """Every service call finished and its result shown (as the snapshot tests wait)."""
    for _ in range(2):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def capture_svg(name: str, keys: tuple[str, ...], out: Path) -> Path:
    # a refresh period longer than the run: what is shown is the first load only
    app = make_app(Path("/nonexistent"), refresh_s=600, service=FakeService())
    async with app.run_test(size=SIZE) as pilot:
        await _settled(pilot)
        await pilot.press(*keys)
        await _settled(pilot)
        return Path(app.save_screenshot(filename=f"{name}.svg", path=str(out)))


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
        for name in names:
            svg = asyncio.run(capture_svg(name, SHOTS[name], work))
            png = args.out / f"{name}.png"
            width, height = render_png(svg, png, args.chromium, work)
            if args.keep_svg:
                shutil.copyfile(svg, args.out / svg.name)
            print(f"{png}  {width}x{height}  {png.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
