#!/usr/bin/env python3
"""Makes the vendored modern-go/reflect2 v1.0.1 in Kubernetes v1.20 work under Go >= 1.18.

Its mapiterinit is linked to reflect.mapiterinit with the pre-1.18 signature and its
hiter is a 2-field stub, so every binary crashes (`fatal error: fault` in
runtime.mapiternext) the first time it JSON-encodes a map. Link runtime.mapiterinit
with the caller-allocated iterator and give hiter Go 1.19's runtime layout, as
reflect2 v1.0.2 does.
"""
import pathlib
import sys

root = pathlib.Path(sys.argv[1]) / "vendor/github.com/modern-go/reflect2"
link = root / "unsafe_link.go"
maps = root / "unsafe_map.go"

src = link.read_text()
old_init = """// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter
"""
new_init = """//go:noescape
//go:linkname mapiterinit runtime.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)
"""
old_hiter = """type hiter struct {
	key   unsafe.Pointer // Must be in first position.  Write nil to indicate iteration end (see cmd/internal/gc/range.go).
	value unsafe.Pointer // Must be in second position (see cmd/internal/gc/range.go).
	// rest fields are ignored
}
"""
new_hiter = """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}
"""
if new_init in src and new_hiter in src:
    print("reflect2: already patched")
else:
    for old in (old_init, old_hiter):
        if old not in src:
            sys.exit(f"reflect2: {link} is not the v1.0.1 this patch expects")
    link.write_text(src.replace(old_init, new_init).replace(old_hiter, new_hiter))

src = maps.read_text()
old_iter = """	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
"""
new_iter = """	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,
"""
if new_iter not in src:
    if old_iter not in src:
        sys.exit(f"reflect2: {maps} is not the v1.0.1 this patch expects")
    maps.write_text(src.replace(old_iter, new_iter))
print("reflect2: patched for Go >= 1.18")
