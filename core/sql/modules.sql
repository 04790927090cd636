-- Modules for the `wasm` job kind (core/wasm, server/modules.py). The bytes are read only
-- by job_module_load, and only when the worker does not already hold that content.

-- name: job_module_put
-- Upload or replace. `created` tells a first upload (201) from a replacement (200): xmax
-- is 0 on a freshly inserted row version and set on the one ON CONFLICT updated.
INSERT INTO job_modules (name, wasm, sha256, size_bytes, exports)
VALUES (%(name)s, %(wasm)s, %(sha256)s, %(size_bytes)s, %(exports)s)
ON CONFLICT (name) DO UPDATE
SET wasm = EXCLUDED.wasm, sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,
    exports = EXCLUDED.exports, updated_at = now()
RETURNING name, size_bytes, sha256, exports, created_at, updated_at, (xmax = 0) AS created

-- name: job_module_get
SELECT name, size_bytes, sha256, exports, created_at, updated_at
FROM job_modules WHERE name = %(name)s

-- name: job_module_list
SELECT name, size_bytes, sha256, exports, created_at, updated_at
FROM job_modules ORDER BY name

-- name: job_module_delete
DELETE FROM job_modules WHERE name = %(name)s RETURNING name

-- name: job_module_load
-- The worker's read: the bytes only when their hash differs from the one it caches.
SELECT sha256, CASE WHEN sha256 = %(known_sha256)s THEN NULL ELSE wasm END AS wasm
FROM job_modules WHERE name = %(name)s
