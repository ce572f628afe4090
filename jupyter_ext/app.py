"""The server extension as a jupyter_server ExtensionApp: settings (traitlets), handlers, and the
scheduler it may host, stopped with the server.

    # jupyter_server_config.py
    c.KilnExtension.run_scheduler = True          # or KILN_RUN_SCHEDULER=1 in the environment
    c.KilnExtension.scheduler_poll_seconds = 1.0
    c.KilnExtension.scheduler_dask_address = ""   # Dask cluster for scheduled kiln-engine runs
    c.KilnExtension.warm_cluster = True            # one LocalCluster for the UI's runs
    c.KilnExtension.warm_cluster_at_start = False  # start it with the server, not on first run
    c.KilnExtension.warm_cluster_workers = 0       # 0: one worker process per CPU
    c.KilnExtension.warm_cluster_memory_limit = "auto"
    c.KilnExtension.warm_cluster_idle_seconds = 900.0
"""

from __future__ import annotations

import threading
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, Unicode, default

from compiler.runtime.warm import WarmCluster
from jupyter_ext.handlers import setup_handlers
from jupyter_ext.runs import RunManager
from jupyter_ext.scheduling import SchedulerService, env_enabled
from jupyter_ext.stores import LineageStores


class KilnExtension(ExtensionApp):
    name = "jupyter_ext"
    description = "Kiln: compile, run, lineage, export and schedules under /kiln/"

    run_scheduler = Bool(
        help=(
            "Run due schedules (compiler.schedule) inside this server, in background threads. "
            "Default: on when KILN_RUN_SCHEDULER=1, else off (run `kiln scheduler` instead)."
        )
    ).tag(config=True)

    scheduler_poll_seconds = Float(
        1.0, help="How often the server's scheduler looks for due schedules (seconds)."
    ).tag(config=True)

    scheduler_dask_address = Unicode(
        "",
        help=(
            "Dask scheduler address for scheduled runs with the kiln engine ('': the warm "
            "cluster, as the UI's runs; a LocalCluster per run when warm_cluster is off)."
        ),
    ).tag(config=True)

    warm_cluster = Bool(
        True,
        help=(
            "Keep one local Dask cluster for the runs started from the UI, reused across runs "
            "and notebooks (unless a run names a cluster or DASK_SCHEDULER_ADDRESS is set)."
        ),
    ).tag(config=True)

    warm_cluster_at_start = Bool(
        False, help="Start the warm cluster with the server instead of on the first run."
    ).tag(config=True)

    warm_cluster_workers = Int(
        0, help="Worker processes of the warm cluster (0: one per CPU)."
    ).tag(config=True)

    warm_cluster_memory_limit = Unicode(
        "auto", help="Memory limit per worker of the warm cluster ('auto': Dask's share)."
    ).tag(config=True)

    warm_cluster_idle_seconds = Float(
        900.0, help="Close the warm cluster after this many seconds without a run."
    ).tag(config=True)

    @default("run_scheduler")
    def _run_scheduler_default(self) -> bool:
        return env_enabled()

    def initialize_settings(self) -> None:
        stores = LineageStores()
        self.kiln_stores = stores
        self.kiln_cluster = (
            WarmCluster(
                self.warm_cluster_workers or None,
                self.warm_cluster_memory_limit or None,
                self.warm_cluster_idle_seconds,
            )
            if self.warm_cluster
            else None
        )
        self.kiln_scheduler = SchedulerService(
            stores,
            enabled=self.run_scheduler,
            poll_seconds=self.scheduler_poll_seconds,
            dask_scheduler=self.scheduler_dask_address,
            cluster=self.kiln_cluster,
            log=self.log,
        )
        self.settings.update(kiln_stores=stores, kiln_scheduler=self.kiln_scheduler)

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None
        root = Path(self.serverapp.contents_manager.root_dir).resolve()
        self.serverapp.web_app.settings["kiln_run_manager"] = RunManager(
            root, cluster=self.kiln_cluster
        )
        setup_handlers(self.serverapp)
        if self.kiln_cluster is not None and self.warm_cluster_at_start:
            cluster = self.kiln_cluster
            threading.Thread(target=cluster.address, name="kiln-warm-start", daemon=True).start()
        self.kiln_scheduler.start(root)
        state = "on" if self.run_scheduler else "off (c.KilnExtension.run_scheduler)"
        self.log.info("Kiln server extension loaded: endpoints under /kiln/; scheduler %s", state)

    async def stop_extension(self) -> None:
        if self.kiln_cluster is not None:
            self.kiln_cluster.close()
        self.kiln_scheduler.stop()
        self.kiln_stores.close_all()
