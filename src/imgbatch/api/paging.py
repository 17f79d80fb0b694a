"""The paging parameters of the list routes, bounded so that every value fits the database.

MongoDB takes 8-byte integers only: an unbounded ``offset`` turned a 20-digit query string into
a 500 (issue 22). Anything past these bounds is a 422 before a query is built.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# Far past any real page (a request holds at most a few million products), far below 2**63.
MAX_OFFSET = 10**9

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Rows to skip, 0 to {MAX_OFFSET}")]
