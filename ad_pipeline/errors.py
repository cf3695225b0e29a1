"""User-facing errors: one clear message that names the file, what was expected and the fix."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user (layout, params, files). The CLI prints it without a traceback."""

    def __init__(self, what: str, *, path: str | Path | None = None, fix: str | None = None):
        self.what = what
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}: {self.what}")
        else:
            parts.append(self.what)
        if self.fix:
            parts.append(f"  fix: {self.fix}")
        return "\n".join(parts)


class LayoutError(UserError):
    """A dataset folder does not follow the expected on-disk layout."""


class ParamsError(UserError):
    """params.yaml is invalid (unknown key, wrong type)."""


class ArtifactError(UserError):
    """A stage input artifact is missing, stale or does not match the manifest."""
