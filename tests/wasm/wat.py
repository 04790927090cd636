"""The WAT modules the wasm tests run, compiled with wasmtime's own wat2wasm."""

from __future__ import annotations

import hashlib

import wasmtime

# add, a multi-value function, a trap, a float function, and a memory.
ARITH = """
(module
  (memory (export "memory") 1)
  (global (export "answer") i32 (i32.const 42))
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add)
  (func (export "add64") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add)
  (func (export "half") (param f64) (result f64)
    local.get 0 f64.const 0.5 f64.mul)
  (func (export "divmod") (param i32 i32) (result i32 i32)
    local.get 0 local.get 1 i32.div_s
    local.get 0 local.get 1 i32.rem_s)
  (func (export "nothing"))
  (func (export "nan") (result f32) f32.const nan)
  (func (export "crash") unreachable)
  (func (export "divide") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.div_s)
  (func (export "ref") (param externref)))
"""

# Loops forever: only fuel (or the epoch) stops it.
SPIN = """
(module
  (func (export "spin") (loop br 0)))
"""

# Allocates without end: grows memory a page at a time and keeps trying after memory.grow
# says no (-1), as a careless allocator would; "abort" gives up with a trap instead.
GREEDY = """
(module
  (memory (export "memory") 1)
  (func (export "grow")
    (loop (drop (memory.grow (i32.const 1))) (br 0)))
  (func (export "abort")
    (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"""

# Imports what no job is granted: WASI's write to a file descriptor.
WASI_WRITER = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "hello") (result i32)
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0))))
"""

# Asks for 100 MiB of memory at start.
BIG_MEMORY = """
(module (memory (export "memory") 1600) (func (export "f")))
"""


def wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
