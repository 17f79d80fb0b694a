"""Requests written straight through the repositories, for in-process tests of worker code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from imgbatch.cli.stack import Stack
from imgbatch.domain.webhook_signing import new_secret
from imgbatch.imaging.profiles import Profile
from imgbatch.models.migrations import migrate
from imgbatch.models.products import ProductRecord, ProductRepository
from imgbatch.models.requests import RequestRecord, RequestStatus, now
from imgbatch.worker.runtime import WorkerRuntime, build_runtime

COLUMNS: list[tuple[str, str | None]] = [
    ("S. No.", "S. No."),
    ("Product Name", "Product Name"),
    ("Input Image Urls", "Input Image Urls"),
]


@contextmanager
def stack_runtime(stack: Stack) -> Iterator[WorkerRuntime]:
    """A worker's runtime in this process, on the stack's services; closed afterwards."""
    rt = build_runtime(stack.settings_for_children())
    try:
        yield rt
    finally:
        rt.run(rt.client.close())
        rt.loop.close()


def seed_request(
    rt: WorkerRuntime,
    urls_per_product: list[list[str]],
    *,
    webhook_url: str | None = None,
    status: RequestStatus = RequestStatus.PENDING,
    profile: Profile | None = None,
) -> str:
    """An ingested request with one product per URL list; returns its id."""
    request_id = uuid.uuid4().hex

    async def seed() -> None:
        await migrate(rt.db)
        await ProductRepository(rt.db).insert_many(
            ProductRecord(
                request_id=request_id,
                serial_number=i + 1,
                position=i,
                line=i + 2,
                product_name=f"P{i + 1}",
                input_image_urls=urls,
            )
            for i, urls in enumerate(urls_per_product)
        )
        created = now()
        await rt.requests.create(
            RequestRecord(
                id=request_id,
                owner="local",
                status=status,
                columns=COLUMNS,
                products_total=len(urls_per_product),
                images_total=sum(map(len, urls_per_product)),
                ingested=True,
                webhook_url=webhook_url,
                webhook_secret=new_secret() if webhook_url else None,
                created_at=created,
                updated_at=created,
                completed_at=created if status == RequestStatus.COMPLETED else None,
                profile=profile,
            )
        )

    rt.run(seed())
    return request_id
