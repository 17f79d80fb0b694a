"""The image pipeline: turn untrusted downloaded bytes into small, clean, upright images.

Everything here treats its input as hostile: the bytes come from arbitrary URLs in a
user-supplied CSV. So the pipeline is ordered to be cheap before it is expensive:

1. classify the content by magic bytes (never by URL extension or Content-Type, which lie);
2. read the dimensions from the header and refuse images over the pixel budget *before* any
   pixel buffer exists (a 100 KB PNG can declare 30000x30000 and ask for 900 MB);
3. only then decode (once), orient, convert to RGB and render every variant of the profile.

Every way a bad file can fail is reported as an :class:`ImageFailure` so that one bad row
never takes down the batch. The function is pure (bytes in, bytes out) and keeps no mutable
module state, so it is safe to run from several threads at once (the worker uses
``asyncio.to_thread``); Pillow releases the GIL while decoding and encoding.
"""

from imgbatch.imaging.compress import CompressedImage, compress_image, inspect_image, open_image
from imgbatch.imaging.decode import Decoded
from imgbatch.imaging.profiles import (
    OutputFormat,
    Profile,
    ProfileError,
    Variant,
    available_profiles,
)
from imgbatch.imaging.render import Encoded, Rendition, render, render_profile
from imgbatch.imaging.sniff import SNIFF_BYTES, sniff_format

__all__ = [
    "SNIFF_BYTES",
    "CompressedImage",
    "Decoded",
    "Encoded",
    "OutputFormat",
    "Profile",
    "ProfileError",
    "Rendition",
    "Variant",
    "available_profiles",
    "compress_image",
    "inspect_image",
    "open_image",
    "render",
    "render_profile",
    "sniff_format",
]
