"""Creating the bucket: infrastructure, done once, apart from the data path.

boto3 rather than obstore because obstore has no bucket operations; this module is imported
only by the command line (``imgbatch run`` for its embedded server, ``imgbatch storage
create-bucket`` for operators), never by the API or a worker, which need only object access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from imgbatch.core.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import BucketLocationConstraintType


def ensure_bucket(
    settings: Settings, *, access_key: str | None = None, secret_key: str | None = None
) -> bool:
    """Create ``IMGBATCH_S3_BUCKET`` unless it exists; True if it was created now.

    Credentials come from the standard AWS chain unless given (the embedded server's are).
    """
    endpoint = str(settings.s3_endpoint_url).rstrip("/") if settings.s3_endpoint_url else None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        # SigV4 and path-style addressing: what every S3-compatible server accepts.
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    try:
        client.head_bucket(Bucket=settings.s3_bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    try:
        if settings.s3_region == "us-east-1":  # the one region that refuses a constraint
            client.create_bucket(Bucket=settings.s3_bucket)
        else:
            region: BucketLocationConstraintType = settings.s3_region  # type: ignore[assignment]
            client.create_bucket(
                Bucket=settings.s3_bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
    except client.exceptions.BucketAlreadyOwnedByYou:
        return False  # another process created it in between
    return True
