"""The `wasm` job kind: WebAssembly modules run in a wasmtime sandbox with fuel, memory and
wall-clock limits and no imports.

    payload.py   the payload and its enqueue-time validation (no wasmtime: cheap to import)
    handler.py   the handler, its module loader and byte cache
    sandbox.py   the threads, engines, limits and error reporting around wasmtime
    modules.py   what a module is: header check, compile, exports (shared with the API)
    values.py    JSON numbers to wasm values and back
    errors.py    why a call failed; permanent ones are PermanentJobError
    bench.py     the handler's overhead against noop

Import the submodules: this package imports none of them, so that registering the kind
(payload.py, handler.py) does not load wasmtime into every process.
"""
