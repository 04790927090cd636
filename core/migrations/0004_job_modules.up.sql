-- boundq schema, version 4: WebAssembly modules for the `wasm` job kind. A job names a
-- module; the worker compiles it once per content hash and runs it in a sandbox
-- (core/wasm). Uploads go through PUT /modules/{name}, which validates with wasmtime
-- before anything is written.

CREATE TABLE job_modules (
    name       text        PRIMARY KEY,
    wasm       bytea       NOT NULL,
    sha256     text        NOT NULL,
    size_bytes integer     NOT NULL,
    exports    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT job_modules_name_valid CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    -- 10 MiB: the upload limit of the API (core/wasm/modules.py MAX_MODULE_BYTES).
    CONSTRAINT job_modules_size_valid CHECK (
        size_bytes BETWEEN 8 AND 10485760 AND size_bytes = octet_length(wasm)
    ),
    CONSTRAINT job_modules_sha256_valid CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT job_modules_exports_array CHECK (jsonb_typeof(exports) = 'array')
);

-- Compiled code compresses poorly and is read whole: store it out of line without trying
-- pglz on every upload.
ALTER TABLE job_modules ALTER COLUMN wasm SET STORAGE EXTERNAL;

COMMENT ON TABLE job_modules IS
    'WebAssembly modules run by jobs of kind wasm. sha256 is of wasm; exports describes '
    'what a job may call (name, kind, and for functions params and results).';
