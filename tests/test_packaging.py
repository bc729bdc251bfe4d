"""The package as users install it: metadata, requirements in step, a wheel that works from anywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _reqs(lines) -> dict[str, str]:
    """{normalised name: specifier} from requirement lines (comments, blanks and -r skipped)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", line)
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        out[name] = m.group(3).replace(" ", "")
    return out


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def compatible(pinned: dict[str, str], ranges: dict[str, str]) -> list[str]:
    """What is wrong between requirement lines and the package's ranges: a name on one side only,
    an exact pin (``==X``) outside its range, or a range written differently on the two sides."""
    from packaging.specifiers import SpecifierSet

    wrong = [f"{name}: only in {'the requirements' if name in pinned else 'pyproject'}"
             for name in sorted(set(pinned) ^ set(ranges))]
    for name in sorted(set(pinned) & set(ranges)):
        pin, allowed = SpecifierSet(pinned[name]), SpecifierSet(ranges[name])
        exact = [s.version for s in pin if s.operator in ("==", "===")]
        if exact:
            if not allowed.contains(exact[0], prereleases=True):
                wrong.append(f"{name}: the pin {exact[0]} is outside {allowed}")
        elif pin != allowed:
            wrong.append(f"{name}: {pin} here, {allowed} in pyproject")
    return wrong


def test_space_pins_lie_inside_the_package_ranges():
    """requirements.txt (the Space) covers core + [tts] + [app], each pin inside pyproject's range;
    requirements-dev.txt covers [dev] + [ray] + [pipecat] (what requirements.txt lacks) the same way."""
    p = _project()
    extras = p["optional-dependencies"]
    package = _reqs(p["dependencies"] + extras["tts"] + extras["app"])
    space = _reqs((ROOT / "requirements.txt").read_text().splitlines())
    assert compatible(space, package) == []
    dev = _reqs((ROOT / "requirements-dev.txt").read_text().splitlines())
    wanted = {k: v for k, v in _reqs(extras["dev"] + extras["ray"] + extras["pipecat"]).items() if k not in space}
    assert compatible(dev, wanted) == []
    # the library itself gives ranges: an exact pin would clash with whatever else users install
    assert [r for r in p["dependencies"] + extras["tts"] if "==" in r] == []


def test_the_compatibility_check_finds_what_is_wrong():
    assert compatible({"torch": "==2.11.0"}, {"torch": ">=2.4,<3"}) == []
    assert compatible({"torch": "==3.0.1"}, {"torch": ">=2.4,<3"}) == ["torch: the pin 3.0.1 is outside <3,>=2.4"]
    assert compatible({"numpy": ">=1.26,<3"}, {"numpy": "<3,>=1.26"}) == []
    assert compatible({"numpy": ">=1.26"}, {"numpy": ">=1.26,<3"}) == ["numpy: >=1.26 here, <3,>=1.26 in pyproject"]
    assert compatible({"six": ""}, {}) == ["six: only in the requirements"]


def test_distribution_name_is_ours_and_the_import_and_command_stay():
    """`lipsync` on PyPI is another project: the distribution is portrait-lipsync, the
    import name and the command are still lipsync."""
    p = _project()
    assert p["name"] == "portrait-lipsync"
    assert p["scripts"] == {"lipsync": "lipsync.cli:main"}
    readme = (ROOT / "README.md").read_text()
    assert "pip install lipsync" not in readme and "'lipsync[" not in readme and '"lipsync[' not in readme


def test_core_dependencies_leave_out_gradio_and_coqui():
    core = _reqs(_project()["dependencies"])
    assert not {"gradio", "coqui-tts", "torchaudio", "ray"} & set(core)


def test_version_and_json_output(tmp_path):
    import lipsync

    out = subprocess.run([sys.executable, "-m", "lipsync", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lipsync {lipsync.__version__}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds (no network: the build backend comes from this environment)."""
    d = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(d), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    return next(d.glob("portrait_lipsync-*.whl"))


def test_wheel_carries_its_run_time_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("lipsync/media/assets/player.html", "lipsync/media/assets/hls/hls.min.js",
              "lipsync/media/assets/hls/LICENSE", "lipsync/cli.py", "lipsync/py.typed",
              "lipsync/runtime/int8_calibration.npz"):
        assert f in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "lipsync = lipsync.cli:main" in meta
    info = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: portrait-lipsync" in info and "Requires-Dist: torch<3,>=2.4" in info
    assert not any(n.startswith(("tests/", "app.py", "benchmarks/")) for n in names)


@pytest.mark.slow
def test_installed_package_runs_from_another_folder(wheel, tmp_path, checkpoint, example_image):
    """Installed into a fresh venv (its dependencies from this environment), `lipsync generate
    --hls-zip --json` works from a folder with no repository in sight."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the venv sees this environment's packages (torch etc.) but not the repository
    site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "_outer.pth").write_text(site + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # fp32: int8's one-off calibration is test_int8.py's (LIPSYNC_PRECISION is read by add_engine_args)
    env.update(LIPSYNC_OFFLINE="1", LIPSYNC_CHECKPOINT=str(checkpoint), LIPSYNC_PRECISION="fp32")
    out = subprocess.run(
        [str(venv / "bin" / "lipsync"), "generate", "--image", str(example_image), "--text", "Hello there.",
         "--voice", "espeak:en-us", "--out", "talk.mp4", "--hls-zip", "talk_hls.zip", "--json", "--max-side", "256"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["video"] == str(work / "talk.mp4") and result["hls_zip"] == str(work / "talk_hls.zip")
    assert result["voice"] == "espeak:en-us" and result["frames"] > 0
    where = subprocess.run(
        [str(py), "-c", "import lipsync; print(lipsync.__file__)"], cwd=work, env=env, capture_output=True, text=True
    ).stdout
    assert str(ROOT) not in where and "site-packages" in where
    with zipfile.ZipFile(work / "talk_hls.zip") as z:
        assert {"master.m3u8", "player.html", "hls.min.js"} <= set(z.namelist())
