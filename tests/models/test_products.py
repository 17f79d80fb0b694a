"""ProductRepository reads: a request's products come back whole and in input order, page by
page, whatever the page size."""

from __future__ import annotations

from imgbatch.models.products import ProductRecord
from imgbatch.worker.runtime import WorkerRuntime
from tests.support.seeding import seed_request


def _iterate(rt: WorkerRuntime, request_id: str, batch_size: int) -> list[ProductRecord]:
    async def collect() -> list[ProductRecord]:
        return [p async for p in rt.products.iterate(request_id, batch_size=batch_size)]

    return rt.run(collect())


def test_iterate_yields_every_product_in_order_across_pages(isolated: WorkerRuntime) -> None:
    rt = isolated
    request_id = seed_request(rt, [[f"http://example.test/{i}.jpg"] for i in range(7)])
    other = seed_request(rt, [["http://example.test/other.jpg"]] * 3)
    # A partial last page (3+3+1), a last page that is exactly full (7, then an empty one),
    # and one page holding everything.
    for batch_size in (3, 7, 1000):
        products = _iterate(rt, request_id, batch_size)
        assert [p.serial_number for p in products] == [1, 2, 3, 4, 5, 6, 7], batch_size
        assert [p.input_image_urls for p in products] == [
            [f"http://example.test/{i}.jpg"] for i in range(7)
        ]
        assert {p.request_id for p in products} == {request_id}
    assert len(_iterate(rt, other, 2)) == 3
    assert _iterate(rt, "no-such-request", 2) == []
