"""MuJoCo plumbing shared by the MuJoCo tasks: fast headless rendering of a named camera."""

from __future__ import annotations

import atexit
import os
import weakref

import mujoco
import numpy as np

_OPEN_RENDERERS: weakref.WeakSet = weakref.WeakSet()
#: The process that made this module's first GL context. A forked child inherits the value
#: but not a working EGL/OpenGL state: rendering there would hang for ever.
_GL_PROCESS: int | None = None


def _refuse_rendering_after_fork() -> None:
    """Raise in a process forked from one that had made a GL context, before EGL hangs."""
    if _GL_PROCESS is not None and _GL_PROCESS != os.getpid():
        raise RuntimeError(
            f"this process (pid {os.getpid()}) was forked from pid {_GL_PROCESS} after that "
            "process had made an EGL/OpenGL context for MuJoCo rendering. EGL does not survive "
            "fork, so rendering here would hang. Start worker processes with 'forkserver' or "
            "'spawn' instead: gym.make_vec(..., vectorization_mode='async', "
            "vector_kwargs={'context': 'forkserver'}), or multiprocessing.get_context('spawn')"
        )


def _close_renderers() -> None:
    """Free GL contexts at exit, before MuJoCo's own exit hook terminates the EGL display.

    Registered after the first context exists: exit hooks run last-registered first, and
    MuJoCo registers its ``eglTerminate`` when it creates its first context.
    """
    for renderer in list(_OPEN_RENDERERS):
        renderer.close()


class MujocoRenderer:
    """Fast headless renders of one named camera: no shadows, reflections or skybox.

    One ``mujoco.Renderer`` per (size, kind) pair, created on first use and kept.
    """

    def __init__(
        self, model: mujoco.MjModel, camera: str, hidden_groups: tuple[int, ...] = ()
    ) -> None:
        self.model = model
        self.camera = camera
        self.option = mujoco.MjvOption()
        for group in hidden_groups:
            self.option.geomgroup[group] = 0
        self._renderers: dict[tuple[int, int, bool], mujoco.Renderer] = {}

    def __call__(self, data: mujoco.MjData, width: int, height: int, depth: bool) -> np.ndarray:
        global _GL_PROCESS
        _refuse_rendering_after_fork()
        key = (width, height, depth)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height, width)
            _GL_PROCESS = os.getpid()
            for flag in (
                mujoco.mjtRndFlag.mjRND_SHADOW,
                mujoco.mjtRndFlag.mjRND_REFLECTION,
                mujoco.mjtRndFlag.mjRND_SKYBOX,
            ):
                renderer.scene.flags[flag] = False
            if depth:
                renderer.enable_depth_rendering()
            self._renderers[key] = renderer
            if len(_OPEN_RENDERERS) == 0:
                atexit.register(_close_renderers)
            _OPEN_RENDERERS.add(self)
        renderer.update_scene(data, self.camera, self.option)
        image = renderer.render()
        return image[..., None].astype(np.float32) if depth else image

    @property
    def fovy(self) -> float:
        """The camera's vertical field of view, degrees."""
        return float(self.model.cam_fovy[self.model.camera(self.camera).id])

    def pose(self, data: mujoco.MjData) -> np.ndarray:
        """World-from-camera pose (4, 4) in OpenCV axes: MuJoCo's camera x stays, its y and z
        (it looks along -z) flip."""
        index = self.model.camera(self.camera).id
        pose = np.eye(4)
        pose[:3, :3] = data.cam_xmat[index].reshape(3, 3) * np.array([1.0, -1.0, -1.0])
        pose[:3, 3] = data.cam_xpos[index]
        return pose

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
