"""Packaging: the top-level agents/ and assets/ folders install as wm_envs.agents and
wm_envs.assets, from a wheel too."""

import subprocess
import sys
import zipfile
from pathlib import Path

import wm_envs
from wm_envs.assets import AGENTS, CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_finds_the_assets():
    assert (CHECKPOINTS / "rssm-grasp" / "card.json").exists()
    assert CHECKPOINTS.resolve().parent == (ROOT / "assets").resolve()
    assert Path(wm_envs.__file__).resolve().parent == (ROOT / "wm_envs").resolve()


def test_wheel_holds_scenes_and_checkpoints_and_installs_them(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)]
    subprocess.run(build, check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("wm_envs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "card.json").exists())
    assert shipped, "no shipped checkpoints to package"
    for folder in shipped:
        for part in ("card.json", "model.safetensors"):
            assert f"wm_envs/assets/checkpoints/{folder}/{part}" in names
    agents = sorted(p.name for p in AGENTS.iterdir() if (p / "card.json").exists())
    for folder in agents:
        for part in ("card.json", "agent.safetensors"):
            assert f"wm_envs/assets/agents/{folder}/{part}" in names
        if (AGENTS / folder / "world_model").exists():  # a bundled, fine-tuned world model
            assert f"wm_envs/assets/agents/{folder}/world_model/model.safetensors" in names
    for scene in ("grasp.xml", "grasp.urdf", "collapse.xml"):
        assert f"wm_envs/assets/{scene}" in names
    # pyproject.toml lists the packages (discovery cannot map assets/): none may be missing
    for init in (ROOT / "wm_envs").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names
    assert "wm_envs/agents/scripted.py" in names

    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    probe = (
        f"import sys; sys.path.insert(0, {str(target)!r}); "
        "from wm_envs.assets import AGENTS, CHECKPOINTS; "
        "print(CHECKPOINTS, sorted(p.name for p in CHECKPOINTS.iterdir()))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target))  # the installed copy, not this checkout
    assert all(name in result.stdout for name in shipped)
