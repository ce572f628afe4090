"""The server extension as a jupyter_server ExtensionApp: settings (traitlets), handlers, and the
scheduler it may host, stopped with the server.

    # jupyter_server_config.py
    c.KilnExtension.run_scheduler = True          # or KILN_RUN_SCHEDULER=1 in the environment
    c.KilnExtension.scheduler_poll_seconds = 1.0
    c.KilnExtension.scheduler_dask_address = ""   # Dask cluster for scheduled kiln-engine runs
"""

from __future__ import annotations

from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Unicode, default

from jupyter_ext.handlers import setup_handlers
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
        "", help="Dask scheduler address for scheduled runs with the kiln engine ('': local)."
    ).tag(config=True)

    @default("run_scheduler")
    def _run_scheduler_default(self) -> bool:
        return env_enabled()

    def initialize_settings(self) -> None:
        stores = LineageStores()
        self.kiln_stores = stores
        self.kiln_scheduler = SchedulerService(
            stores,
            enabled=self.run_scheduler,
            poll_seconds=self.scheduler_poll_seconds,
            dask_scheduler=self.scheduler_dask_address,
            log=self.log,
        )
        self.settings.update(kiln_stores=stores, kiln_scheduler=self.kiln_scheduler)

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None
        setup_handlers(self.serverapp)
        root = Path(self.serverapp.contents_manager.root_dir).resolve()
        self.kiln_scheduler.start(root)
        state = "on" if self.run_scheduler else "off (c.KilnExtension.run_scheduler)"
        self.log.info("Kiln server extension loaded: endpoints under /kiln/; scheduler %s", state)

    async def stop_extension(self) -> None:
        self.kiln_scheduler.stop()
        self.kiln_stores.close_all()
