"""``GET /api/requests/{id}/audit``: what happened to one of the caller's requests, in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from imgbatch.api.deps import OwnedRequestDep, ServicesDep
from imgbatch.api.openapi import OWNED_REQUEST, errors

router = APIRouter(tags=["requests"])


class AuditEntryView(BaseModel):
    at: datetime
    event: str
    detail: dict[str, Any]


@router.get(
    "/api/requests/{request_id}/audit",
    response_model=list[AuditEntryView],
    responses=errors(*OWNED_REQUEST),
)
async def request_audit(record: OwnedRequestDep, services: ServicesDep) -> list[AuditEntryView]:
    trail = await services.audit.for_request(record.id)
    return [AuditEntryView.model_validate(entry.model_dump()) for entry in trail]
