"""``docker.disk`` and ``docker.prune``: exactly the old stopped containers and dangling images, nothing else.

The engine is shared, so the prune is scoped to this session's run label;
the decoys prove that each filter (age, state, label, opt-out, dangling)
holds on its own.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator

import docker
import pytest

from tests.integration.docker.dockertest import RUN_LABEL, Containers, wait_until
from watchdogd.families.docker.actions import PruneAction, PruneParams
from watchdogd.families.docker.probes import DiskParams, DiskProbe
from watchdogd.families.docker.target import DockerEngine

pytestmark = pytest.mark.integration

OLDER_THAN = 3.0


def _rootfs(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class Images:
    """Imported images (untagged = dangling) that are removed at teardown if still there."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api
        self.ids: list[str] = []

    def make(self, labels: dict[str, str], tag: str | None = None, size: int = 64 * 1024) -> str:
        changes = [f"LABEL {k}={v}" for k, v in labels.items()]
        # Distinct content: identical layers would be shared, and a shared layer frees nothing on its own.
        out = self.api.import_image_from_data(_rootfs(os.urandom(size)), repository=tag, changes=changes)
        image_id = str(json.loads(out.strip().splitlines()[-1])["status"])
        self.ids.append(image_id)
        return image_id

    def exists(self, image_id: str) -> bool:
        try:
            self.api.inspect_image(image_id)
        except docker.errors.NotFound:
            return False
        return True

    def cleanup(self) -> None:
        for image_id in self.ids:
            try:
                self.api.remove_image(image_id, force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def images(api: docker.APIClient) -> Iterator[Images]:
    made = Images(api)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def volumes(api: docker.APIClient) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            try:
                api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass


def exists(api: docker.APIClient, cid: str) -> bool:
    try:
        api.inspect_container(cid)
    except docker.errors.NotFound:
        return False
    return True


def test_prune_removes_exactly_the_old_stopped_containers_and_dangling_images(
    engine: DockerEngine, containers: Containers, images: Images, volumes: list[str], run_id: str
) -> None:
    api = containers.api
    mine = {RUN_LABEL: run_id}
    # Old: made first, then allowed to age past OLDER_THAN.
    old_stopped = containers.create("old", ["sh", "-c", "dd if=/dev/zero of=/junk bs=1M count=2"])
    old_optout = containers.create("optout", ["true"], labels={"watchdogd.enable": "false"})
    old_foreign = containers.create("foreign", ["true"], labels={RUN_LABEL: "someone-else"})
    old_dangling = images.make(mine)
    foreign_dangling = images.make({RUN_LABEL: "someone-else"})
    tagged = images.make(mine, tag=f"watchdogd-test/tagged-{run_id}")
    old_volume = api.create_volume(f"wdt-{run_id}-old", labels=mine)["Name"]
    volumes.append(old_volume)
    for cid in (old_stopped, old_optout, old_foreign):
        containers.wait_exited(cid)
    started = time.time()
    wait_until(lambda: time.time() - started > OLDER_THAN + 0.5, what="the old objects to age")

    disk = {r.subject: r for r in DiskProbe(DiskParams(kinds=["containers", "images", "volumes"]), engine,
                                            time.time).measure()}
    assert disk["containers"].value >= 2 * 2**20  # at least our container's 2 MiB writable layer
    assert disk["images"].value >= 2 * 64 * 1024  # at least our two dangling images
    assert disk["total"].value == pytest.approx(sum(disk[k].value for k in ("containers", "images", "volumes")))

    # Young and running: made just before the prune (after `system df`, which can take seconds under load).
    young_stopped = containers.create("young", ["true"])
    running = containers.create("running", ["sleep", "600"])
    young_dangling = images.make(mine)
    containers.wait_exited(young_stopped)

    params = PruneParams(older_than=OLDER_THAN, labels=[f"{RUN_LABEL}={run_id}"], volumes=True, timeout=60)
    prune = PruneAction(params, engine, time.time)
    planned = prune.run([], dry_run=True)
    planned_subjects = {item.subject for item in planned.items}
    assert planned.ok, planned
    assert planned_subjects == {
        f"container/{containers.name('old')}",
        f"image/{old_dangling.removeprefix('sha256:')[:12]}",
        f"volume/{old_volume}",
    }
    assert exists(api, old_stopped) and images.exists(old_dangling)  # dry-run removed nothing

    done = prune.run([], dry_run=False)

    assert done.ok, done
    assert {item.subject for item in done.items} == planned_subjects
    assert not exists(api, old_stopped)
    assert not images.exists(old_dangling)
    assert old_volume not in {v["Name"] for v in api.volumes()["Volumes"] or []}
    for cid in (old_optout, old_foreign, young_stopped, running):
        assert exists(api, cid), cid
    for image_id in (foreign_dangling, tagged, young_dangling):
        assert images.exists(image_id), image_id
    assert "removed 1 container(s), 1 image(s), 1 volume(s)" in done.detail
