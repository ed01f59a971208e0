"""quadlet: a podman quadlet (.container unit) that keeps pipglr running under the user's systemd.

The unit starts the same container as the `run` runlabel (labels/run), of one instance: the
template quadlet/pipglr.container.j2 is rendered with the runlabels' values
(render.template_values), and tests/test_quadlet.py checks that its volumes,
secret, devices and flags match the run label's, so the two cannot drift.
"""

from __future__ import annotations

import re

from . import render
from .config import Config
from .errors import ConfigError

TEMPLATE = "quadlet/pipglr.container.j2"
# A reference podman can pull or find: no whitespace, control characters or
# systemd specifiers ('%'), which would change the meaning of the unit line.
_IMAGE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


def names_a_registry(image: str) -> bool:
    """Whether `podman auto-update` can ask a registry for a newer IMAGE: its first part is a registry host
    (a dot or a port: localhost/NAME is this machine's own storage, localhost:PORT/NAME a registry) and a tag,
    not a pinned digest."""
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first) and "@" not in image


def render_quadlet(config: Config, image: str, instance: str = render.DEFAULT_INSTANCE) -> str:
    """The text of INSTANCE.container for IMAGE (for ~/.config/containers/systemd/): the container, volumes
    and secret of `podman container runlabel --name INSTANCE run IMAGE` (pipglr: the default instance's)."""
    render.check_instance_name(instance)
    if not image or not _IMAGE_REF.fullmatch(image):
        raise ConfigError(
            f"image {image!r} cannot go into a quadlet unit: give an image reference such as "
            "localhost/pipglr:latest or registry.example.com/group/pipglr@sha256:... "
            "(letters, digits and . _ / : @ + - only)")
    values = render.template_values(config)
    values["image"] = image
    values["instance"] = render.instance_names(instance)
    values["runlabel_name"] = "" if instance == render.DEFAULT_INSTANCE else f"--name {instance} "
    values["auto_update"] = names_a_registry(image)
    return render._environment().get_template(TEMPLATE).render(values)
