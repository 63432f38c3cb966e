"""Every HQ source, declared once: the stream that reads it, the transform that turns its
records into rows, and the tables those rows land in.

Adding a source is adding one class with `@register` (here, or in a module imported before
the sync runs), its migration and its tests: the settings (`STREAMS`), the command line
(`--stream`, `--resource`), the pipeline and the loader all take it from this registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from etl.errors import ConfigError
from etl.extract.client import HQClient
from etl.extract.exports import ExportStream, parse_exports
from etl.extract.restore import RestoreStream, Worker, read_workers, worker_client
from etl.extract.streams import (AppStream, CaseStream, CaseStreamV2, FormStream, GroupStream,
                                 LocationStream, LocationTypeStream, MobileWorkerStream, Stream,
                                 WebUserStream)
from etl.load.exports import transform_export
from etl.load.restore import transform_restore
from etl.load.postgres import (APPS_TARGET, CASES_TARGET, EXPORTS_TARGET, FORMS_TARGET,
                               GROUPS_TARGET, RESTORE_TARGET,
                               LOCATION_TYPES_TARGET, LOCATIONS_TARGET, USERS_TARGET,
                               WEB_USERS_TARGET, Target)
from etl.transform import reference
from etl.transform import RecordTransform
from etl.transform.apps import transform_app
from etl.transform.cases import transform_case
from etl.transform.forms import transform_form

if TYPE_CHECKING:
    from etl.config import Settings


class Source:
    """One HQ source. `name` is what STREAMS and `--stream` say; `id_key` names a record's id
    (for dead letters); `default`: synced when STREAMS is unset; `backfill`: pages by
    `indexed_on`, so a window of it can be re-read; `isolated`: a failure of one partition says
    nothing of the project's other streams (a worker's refused login, one export's setting);
    `when_configured`: synced besides STREAMS whenever its setting gives it partitions.

    The stream's class names its cursor kind; `partitions` lists the independent reads of the
    source (each with its own checkpoint and lock), `[""]` for a source read as one, `[]` when
    the settings ask for none.
    """

    name: ClassVar[str]
    id_key: ClassVar[str] = "id"
    default: ClassVar[bool] = True
    backfill: ClassVar[bool] = False
    isolated: ClassVar[bool] = False
    when_configured: ClassVar[bool] = False
    transform: ClassVar[RecordTransform]
    target: ClassVar[Target]

    @classmethod
    def partitions(cls, settings: "Settings") -> list[str]:
        return [""]

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        raise NotImplementedError


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    if cls.name in SOURCES and SOURCES[cls.name] is not cls:
        raise ValueError(f"two sources are named {cls.name!r}")
    SOURCES[cls.name] = cls
    return cls


def get(name: str) -> type[Source]:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown stream {name!r}; choose from {names()}") from None


def names(*, default_only: bool = False, backfill_only: bool = False) -> list[str]:
    """Source names in sync order (registration order: `apps` first)."""
    return [n for n, s in SOURCES.items()
            if (s.default or not default_only) and (s.backfill or not backfill_only)]


# --- listings HQ gives only in full, kept as run-scoped snapshots --------------------------

class _Listing(Source):
    stream_class: ClassVar[type[Stream]]
    page_size: ClassVar[int] = 1000

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        return cls.stream_class(client, domain, cls.page_size)


@register
class Apps(_Listing):
    """The Application Structure API: the data dictionary the form tables are named from."""

    name = "apps"
    page_size = 100
    stream_class = AppStream
    transform = staticmethod(transform_app)
    target = APPS_TARGET



# --- cases and forms: paged by indexed_on -------------------------------------------------

@register
class Cases(Source):
    name = "cases"
    id_key = "case_id"
    backfill = True
    transform = staticmethod(transform_case)
    target = CASES_TARGET

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        kind = CaseStreamV2 if settings.case_api == "v2" else CaseStream
        return kind(client, domain, settings.case_page_size)


@register
class Forms(Source):
    name = "forms"
    backfill = True
    transform = staticmethod(transform_form)
    target = FORMS_TARGET

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        return FormStream(client, domain, settings.form_page_size)


# --- reference data --------------------------------------------------------------------------

@register
class Users(_Listing):
    """Mobile workers, active and deactivated."""

    name = "users"
    stream_class = MobileWorkerStream
    transform = staticmethod(reference.transform_user)
    target = USERS_TARGET


@register
class WebUsers(_Listing):
    name = "web_users"
    stream_class = WebUserStream
    transform = staticmethod(reference.transform_web_user)
    target = WEB_USERS_TARGET


@register
class Groups(_Listing):
    name = "groups"
    stream_class = GroupStream
    transform = staticmethod(reference.transform_group)
    target = GROUPS_TARGET


@register
class LocationTypes(_Listing):
    name = "location_types"
    id_key = "id"
    stream_class = LocationTypeStream
    transform = staticmethod(reference.transform_location_type)
    target = LOCATION_TYPES_TARGET


@register
class Locations(_Listing):
    name = "locations"
    id_key = "location_id"
    page_size = 5000  # location API v2's maximum
    stream_class = LocationStream
    transform = staticmethod(reference.transform_location)
    target = LOCATIONS_TARGET


# --- sources with tokens: one partition per export, per mobile worker ----------------------

@register
class Exports(Source):
    """The legacy Export API, one partition per export of EXPORTS (its table name)."""

    name = "exports"
    id_key = "form_id"
    default = False
    isolated = True
    when_configured = True
    transform = staticmethod(transform_export)
    target = EXPORTS_TARGET

    @classmethod
    def partitions(cls, settings: "Settings") -> list[str]:
        return [spec.name for spec in parse_exports(settings.exports)]

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        if settings.commcare_auth == "apikey":
            raise ConfigError(
                "EXPORTS: the Export API takes a web login, not an API key: set "
                "COMMCARE_AUTH=digest (or basic) and COMMCARE_PASSWORD (or "
                "COMMCARE_PASSWORD_FILE) for COMMCARE_USERNAME")
        spec = next(s for s in parse_exports(settings.exports) if s.name == partition)
        return ExportStream(client, domain, 0, export=spec)


@register
class Restore(Source):
    """The OTA restore, one partition per mobile worker of RESTORE_USERS_FILE (of this
    project), each logged in as that worker."""

    name = "restore"
    id_key = "case_id"
    default = False
    isolated = True
    when_configured = True
    transform = staticmethod(transform_restore)
    target = RESTORE_TARGET

    @classmethod
    def _workers(cls, settings: "Settings") -> list[Worker]:
        if not settings.restore_users_file:
            return []
        domain = settings.commcare_domain[0] if settings.commcare_domain else ""
        return [w for w in read_workers(settings.restore_users_file)
                if w.domain in ("", domain)]

    @classmethod
    def partitions(cls, settings: "Settings") -> list[str]:
        return [w.username for w in cls._workers(settings)]

    @classmethod
    def stream(cls, client: HQClient, domain: str, settings: "Settings",
               partition: str = "") -> Stream:
        worker = next(w for w in cls._workers(settings) if w.username == partition)
        return RestoreStream(worker_client(settings, worker), domain, 0, worker=worker)
