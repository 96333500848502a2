"""PyBullet plumbing shared by the PyBullet tasks: a private headless client and a fast camera."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pybullet
import torch
from pybullet_utils.bullet_client import BulletClient

from wm_envs import geometry
from wm_envs.tasks.base import PhysicsTaskEnv

GRAVITY = -9.81


def make_client() -> BulletClient:
    """A private headless (``p.DIRECT``) client: envs in one process never share a world."""
    return BulletClient(pybullet.DIRECT)


def reset_world(client: BulletClient, control_dt: float, substeps: int) -> None:
    """Empty the world; one ``stepSimulation`` then advances ``control_dt`` in ``substeps``.

    A full reset per episode (rather than moving bodies back) leaves no contact or solver
    state behind, so an episode depends only on its seed and actions.
    """
    client.resetSimulation()
    client.setPhysicsEngineParameter(
        fixedTimeStep=control_dt, numSubSteps=substeps, deterministicOverlappingPairs=1
    )
    client.setGravity(0.0, 0.0, GRAVITY)


def mjcf_element(path: Path, tag: str, name: str) -> ET.Element:
    """A named element (a camera, a geom) of an MJCF file: a PyBullet twin of a MuJoCo scene
    reads what the two share from the MJCF instead of repeating its numbers."""
    element = ET.parse(path).getroot().find(f".//{tag}[@name='{name}']")
    if element is None:
        raise ValueError(f"no {tag} named {name!r} in {path}")
    return element


def mjcf_rgba(path: Path, geom: str) -> list[float]:
    """The colour of a named geom of an MJCF file."""
    return [float(v) for v in mjcf_element(path, "geom", geom).get("rgba").split()]


def linear_depth(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Distance along the camera axis in metres from OpenGL's non-linear depth buffer."""
    return far * near / (far - (far - near) * buffer)


class BulletCamera:
    """A pinhole camera rendered by TinyRenderer (CPU, no shadows): RGB uint8 and depth in m.

    ``look_at`` moves it (a chase camera calls it every step); the projection is cached per
    image aspect ratio.
    """

    def __init__(
        self, fovy: float, near: float, far: float, light: np.ndarray | None = None
    ) -> None:
        self.fovy, self.near, self.far = fovy, near, far
        self.light = light  # where the light comes from (a world point); None: the eye
        self.eye = np.zeros(3)
        self.pose = np.eye(4)  # world from camera, OpenCV axes
        self.view: tuple[float, ...] = ()
        self._projections: dict[float, tuple[float, ...]] = {}

    @classmethod
    def from_mjcf(cls, path: Path, name: str, near: float, far: float) -> BulletCamera:
        """The camera ``name`` of an MJCF file (``pos``, ``xyaxes``, ``fovy``): both engines
        then render the scene from the same pose without repeating its numbers."""
        element = mjcf_element(path, "camera", name)
        eye = np.array(element.get("pos").split(), dtype=float)
        x_axis, y_axis = np.array(element.get("xyaxes").split(), dtype=float).reshape(2, 3)
        forward = -np.cross(x_axis, y_axis)  # MuJoCo cameras look along their -z axis
        camera = cls(float(element.get("fovy", 45.0)), near, far)
        camera.look_at(eye, eye + forward / np.linalg.norm(forward), y_axis)
        return camera

    def look_at(self, eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> None:
        """Place the camera at ``eye`` looking at ``target`` with ``up`` as the image's up."""
        self.eye = np.asarray(eye, dtype=float)
        self.view = pybullet.computeViewMatrix(list(eye), list(target), list(up))
        self.pose = geometry.look_at(
            *(torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
        ).numpy()

    def render(
        self, client: BulletClient, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) and depth float32 (H, W, 1) in metres, from one render."""
        aspect = width / height
        projection = self._projections.get(aspect)
        if projection is None:
            projection = pybullet.computeProjectionMatrixFOV(self.fovy, aspect, self.near, self.far)
            self._projections[aspect] = projection
        _, _, rgba, depth, _ = client.getCameraImage(
            width,
            height,
            self.view,
            projection,
            shadow=0,
            lightDirection=list(self.eye if self.light is None else self.light),
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]
        buffer = np.asarray(depth, dtype=np.float32).reshape(height, width, 1)
        return rgb, linear_depth(buffer, self.near, self.far)


class PybulletTaskEnv(PhysicsTaskEnv):
    """A ``PhysicsTaskEnv`` simulated in a private PyBullet client and seen by ``self.camera``."""

    camera: BulletCamera

    def __init__(
        self,
        obs_mode: str = "dict",
        image_size: int = 64,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
    ) -> None:
        super().__init__(obs_mode, image_size, render_mode, width, height)
        self.client: BulletClient | None = make_client()

    def _place_camera(self) -> None:
        """Move ``self.camera`` before a render (a chase camera); a fixed one stays put."""

    def _camera(self) -> tuple[np.ndarray, float]:
        self._place_camera()
        return self.camera.pose, self.camera.fovy

    def _render(self, width: int, height: int, depth: bool = False) -> np.ndarray:
        rgb, metres = self._render_rgbd(width, height)
        return metres if depth else rgb

    def _render_rgbd(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        self._place_camera()
        return self.camera.render(self.client, width, height)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None
