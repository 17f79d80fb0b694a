"""``GET /api/requests/{id}/audit``: what happened to one of the caller's requests, in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from imgbatch.api.auth import OwnerDep
from imgbatch.api.deps import DatabaseDep, RequestsDep
from imgbatch.api.openapi import OWNED_REQUEST, errors
from imgbatch.api.requests import get_owned_request
from imgbatch.models.audit import AuditRepository

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
async def request_audit(
    request_id: str, owner: OwnerDep, requests: RequestsDep, db: DatabaseDep
) -> list[AuditEntryView]:
    await get_owned_request(requests, request_id, owner)
    trail = await AuditRepository(db).for_request(request_id)
    return [AuditEntryView.model_validate(entry.model_dump()) for entry in trail]
