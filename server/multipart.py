"""A small, strict multipart/form-data reader for the bulk upload (`-F file=@jobs.json`).

The body is already bounded (MAX_BULK_BYTES plus a little) when it gets here, so it is
parsed in memory: at most `max_parts` parts, part headers of at most 8 KiB, and the part
named `file` (or else the only part with a filename) is the upload.
"""

from __future__ import annotations

from boundq.server.errors import ApiError

MAX_PART_HEADERS = 8 * 1024


def _bad(message: str, code: str = "malformed_multipart") -> ApiError:
    return ApiError(400, code, message)


def _disposition(headers: bytes) -> dict[str, str]:
    """Parameters of the part's Content-Disposition (name, filename)."""
    try:
        text = headers.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("part headers are not valid UTF-8") from None
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "content-disposition":
            params: dict[str, str] = {}
            for item in value.split(";")[1:]:
                key, eq, val = item.partition("=")
                if eq:
                    params[key.strip().lower()] = val.strip().strip('"')
            return params
    raise _bad("a part has no Content-Disposition header")


def file_part(body: bytes, boundary: str | None, max_parts: int) -> bytes:
    """The uploaded file's bytes; 400 for a malformed body, 422 when no file was sent."""
    if not boundary or len(boundary) > 70:
        raise _bad("multipart/form-data needs a boundary parameter (1..70 characters)")
    try:
        delimiter = b"\r\n--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        raise _bad("the multipart boundary must be ASCII") from None
    if (b"\r\n" + body).count(delimiter) > max_parts + 1:
        raise _bad(f"too many parts (at most {max_parts})", "too_many_parts")
    sections = (b"\r\n" + body).split(delimiter)
    if len(sections) < 3:
        raise _bad("the body has no complete part")
    if not sections[-1].startswith(b"--"):
        raise _bad("the closing boundary is missing")
    chosen: bytes | None = None
    with_filename: list[bytes] = []
    for section in sections[1:-1]:
        line_end = section.find(b"\r\n")
        if line_end < 0 or section[:line_end].strip(b" \t"):
            raise _bad("a boundary line is malformed")
        head_end = section.find(b"\r\n\r\n", line_end)
        if head_end < 0 or head_end - line_end > MAX_PART_HEADERS:
            raise _bad("a part's headers are malformed or too long")
        params = _disposition(section[line_end + 2 : head_end])
        content = section[head_end + 4 :]
        if params.get("name") == "file":
            if chosen is not None:
                raise _bad("more than one part is named 'file'")
            chosen = content
        elif "filename" in params:
            with_filename.append(content)
    if chosen is None and len(with_filename) == 1:
        chosen = with_filename[0]
    if chosen is None:
        raise ApiError(422, "invalid_field", "send the jobs as a form part named 'file' "
                       "(curl -F file=@jobs.json)", "file")
    return chosen
