/* The aligned forms of operator new with sizes within an alignment of SIZE_MAX must fail:
 * throw std::bad_alloc, or return null for the nothrow forms. libstdc++'s own aligned new
 * (GCC 12) rounds the size up to the alignment without checking, so that under glibc
 * these wrap to a 0-byte request and return a block; this program is run under the
 * library only. Exits 1, naming the call, if any returns a block. */
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <new>

/* Sizes the compiler cannot see, so that nothing is folded or elided. */
static volatile std::size_t max_size = SIZE_MAX;
static void *volatile sink;

int main() {
    int failures = 0;
    for (std::size_t align : {std::size_t(32), std::size_t(64), std::size_t(4096)}) {
        for (std::size_t size : {std::size_t(max_size), max_size - 1, max_size - (align - 1),
                                 max_size - align + 1 - align}) {
            if ((sink = ::operator new(size, std::align_val_t(align), std::nothrow)) != nullptr) {
                std::printf("nothrow new(%zx, align %zu) returned a block\n", size, align);
                failures++;
            }
            if ((sink = ::operator new[](size, std::align_val_t(align), std::nothrow)) != nullptr) {
                std::printf("nothrow new[](%zx, align %zu) returned a block\n", size, align);
                failures++;
            }
            try {
                sink = ::operator new(size, std::align_val_t(align));
                std::printf("new(%zx, align %zu) returned a block\n", size, align);
                failures++;
            } catch (const std::bad_alloc &) {
            }
            try {
                sink = ::operator new[](size, std::align_val_t(align));
                std::printf("new[](%zx, align %zu) returned a block\n", size, align);
                failures++;
            } catch (const std::bad_alloc &) {
            }
        }
    }
    /* Still usable afterwards. */
    void *block = ::operator new(100, std::align_val_t(64));
    bool ok = (reinterpret_cast<std::uintptr_t>(block) & 63) == 0;
    ::operator delete(block, std::align_val_t(64));
    if (!ok) {
        std::printf("new(100, align 64) after the refusals: misaligned\n");
        failures++;
    }
    return failures == 0 ? 0 : 1;
}
