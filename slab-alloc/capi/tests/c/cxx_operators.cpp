/* C++'s operator new and delete in every form: blocks aligned as asked and kept intact,
 * nothrow forms returning null, throwing forms calling the new_handler and then throwing
 * std::bad_alloc when no memory can be had. Prints only properties, never addresses, so
 * that the output under glibc and under LD_PRELOAD must be the same. run-c-tests.sh also
 * checks that the operators bind to the library under LD_PRELOAD. */
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <new>

struct alignas(64) Line { unsigned char bytes[64]; };
struct alignas(4096) Page { unsigned char bytes[4096]; };

/* Sizes the compiler cannot see, so that nothing is folded or elided. */
static volatile std::size_t huge = std::size_t(1) << 60;
static volatile std::size_t count = 1000;
static void *volatile sink;
static int handler_calls;

static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr);
}

static bool aligned(const void *p, std::size_t align) {
    return (reinterpret_cast<std::uintptr_t>(p) & (align - 1)) == 0;
}

int main() {
    /* Plain and array forms, small and large, every byte kept. */
    for (std::size_t size : {std::size_t(1), std::size_t(24), std::size_t(4000),
                             std::size_t(200000), std::size_t(3) << 20}) {
        unsigned char *array = new unsigned char[size];
        std::memset(array, 0x5A, size);
        sink = array;
        bool kept = array[0] == 0x5A && array[size - 1] == 0x5A;
        bool is_aligned = aligned(array, 16);
        delete[] array;
        std::printf("new[] %zu: 16-aligned %d, kept %d\n", size, is_aligned, kept);
    }
    int *numbers = new int[count];
    for (std::size_t i = 0; i < count; i++) numbers[i] = int(i);
    long sum = 0;
    for (std::size_t i = 0; i < count; i++) sum += numbers[i];
    delete[] numbers;
    std::printf("new int[1000]: sum %ld\n", sum);

    /* Over-aligned types (the align_val_t forms) and sized delete. */
    Line *line = new Line;
    Page *page = new Page;
    Page *pages = new Page[3];
    std::printf("alignas(64) %d, alignas(4096) %d, array %d\n", aligned(line, 64),
                aligned(page, 4096), aligned(pages, 4096));
    delete line;
    delete page;
    delete[] pages;
    void *raw = ::operator new(100);
    ::operator delete(raw, 100);
    void *raw_aligned = ::operator new(100, std::align_val_t(256));
    std::printf("operator new(100, 256): aligned %d\n", aligned(raw_aligned, 256));
    ::operator delete(raw_aligned, 100, std::align_val_t(256));

    /* Exhaustion: nothrow forms return null; the others call the handler, then throw. */
    std::printf("nothrow new: null %d\n", ::operator new(huge, std::nothrow) == nullptr);
    std::printf("nothrow new[]: null %d\n", ::operator new[](huge, std::nothrow) == nullptr);
    std::printf("nothrow aligned new: null %d\n",
                ::operator new(huge, std::align_val_t(64), std::nothrow) == nullptr);
    try {
        sink = ::operator new(huge);
        std::printf("new of 2^60 bytes: returned\n");
    } catch (const std::bad_alloc &) {
        std::printf("new of 2^60 bytes: bad_alloc\n");
    }
    std::set_new_handler(handler);
    try {
        sink = ::operator new[](huge);
        std::printf("new[] of 2^60 bytes with a handler: returned\n");
    } catch (const std::bad_alloc &) {
        std::printf("new[] of 2^60 bytes with a handler: bad_alloc after %d handler call(s)\n",
                    handler_calls);
    }
    try {
        sink = ::operator new(huge, std::align_val_t(4096));
        std::printf("aligned new of 2^60 bytes: returned\n");
    } catch (const std::bad_alloc &) {
        std::printf("aligned new of 2^60 bytes: bad_alloc\n");
    }
    /* Still usable afterwards. */
    Line *after = new Line[10];
    std::printf("after exhaustion: aligned %d\n", aligned(after, 64));
    delete[] after;
    return 0;
}
