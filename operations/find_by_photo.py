"""Products like a shopper's photo."""
from __future__ import annotations

from pathlib import Path

from catalog import open_image
from catalog.images import too_large
from operations.errors import Refused
from operations.filter_request import FilterRequest
from operations.policy import SearchPolicy
from search.searcher import Answer, Searcher


def find_by_photo(searcher: Searcher, policy: SearchPolicy, photo: bytes | str | Path | None, *,
                  name: str | None = None, model: str | None = None, k: int | None = None,
                  filters: FilterRequest = FilterRequest()) -> Answer:
    """Check the request, open the photo within the policy's limits, search.

    `photo` is the file's bytes or its path; `name` is how to call it in a message. Raises
    `Refused`, `UnknownFilterValue`, `ImageError` or the store's errors."""
    model, k = policy.model(model), policy.count(k)
    name = name or (Path(photo).name if isinstance(photo, str | Path) else "the photo")
    check_size(photo, name, policy)
    resolved = searcher.resolve(model, *filters.raw())
    image = open_image(photo, policy.image_limits)
    return searcher.search_image(model, image, k=k, filters=resolved)


def check_size(photo, name: str, policy: SearchPolicy) -> None:
    if photo is None or (isinstance(photo, str) and not photo):
        raise Refused("no_photo", "no photo: send an image file")
    if isinstance(photo, bytes | bytearray):
        size = len(photo)
    else:
        path = Path(photo)
        size = path.stat().st_size if path.is_file() else 0  # a missing file: open_image says so
    if size > policy.max_upload_bytes:
        raise Refused("too_large", str(too_large(name, size, policy.image_limits)),
                      limit=policy.max_upload_bytes)
