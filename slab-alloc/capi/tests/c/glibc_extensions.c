/* glibc's extensions to the malloc family, as a replacement malloc must provide them:
 * `cfree` (a compat symbol: old binaries bind `cfree@GLIBC_2.2.5`), `mallopt`,
 * `malloc_trim`, `mallinfo`, `mallinfo2`, `malloc_stats` and `malloc_info`. Each line
 * states a documented property, so the output under glibc and under LD_PRELOAD of another
 * malloc must be identical; the figures themselves, which differ, are never printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bind the compat symbol as a binary linked against glibc before 2.26 does. */
extern void cfree(void *);
__asm__(".symver cfree,cfree@GLIBC_2.2.5");

/* Resident bytes of this process. */
static size_t resident(void) {
    FILE *statm = fopen("/proc/self/statm", "r");
    unsigned long size = 0, pages = 0;
    if (statm) {
        if (fscanf(statm, "%lu %lu", &size, &pages) != 2) pages = 0;
        fclose(statm);
    }
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* Runs malloc_stats with stderr sent to a file and reads it back. */
static void stats_text(char *text, size_t size) {
    FILE *file = tmpfile();
    int saved = dup(2);
    fflush(stderr);
    dup2(fileno(file), 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(file);
    size_t read = fread(text, 1, size - 1, file);
    text[read] = 0;
    fclose(file);
}

/* The number after the last occurrence of `label` in `text`. */
static size_t stats_value(const char *text, const char *label) {
    const char *at = NULL;
    for (const char *p = strstr(text, label); p; p = strstr(p + 1, label)) at = p;
    if (!at) return 0;
    at = strchr(at, '=');
    return at ? strtoull(at + 1, NULL, 10) : 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* cfree frees like free. */
    for (int i = 0; i < 1000; i++) {
        char *block = malloc(100 + i);
        memset(block, 1, 100 + i);
        cfree(block);
    }
    cfree(NULL);
    printf("cfree@GLIBC_2.2.5 frees blocks: ok\n");

    /* mallopt: 1 for a parameter accepted (or ignored), 0 for a value refused. */
    struct { int param; int value; const char *name; } options[] = {
        {M_MXFAST, 0, "M_MXFAST 0"},
        {M_MXFAST, 64, "M_MXFAST 64"},
        {M_MXFAST, 160, "M_MXFAST 160"},
        {M_MXFAST, 161, "M_MXFAST 161"},
        {M_MXFAST, -1, "M_MXFAST -1"},
        {M_TRIM_THRESHOLD, 0, "M_TRIM_THRESHOLD 0"},
        {M_TRIM_THRESHOLD, -1, "M_TRIM_THRESHOLD -1"},
        {M_TRIM_THRESHOLD, 128 * 1024, "M_TRIM_THRESHOLD 128 KiB"},
        {M_TOP_PAD, 0, "M_TOP_PAD 0"},
        {M_TOP_PAD, 1 << 20, "M_TOP_PAD 1 MiB"},
        {M_MMAP_THRESHOLD, 0, "M_MMAP_THRESHOLD 0"},
        {M_MMAP_THRESHOLD, 128 * 1024, "M_MMAP_THRESHOLD 128 KiB"},
        {M_MMAP_THRESHOLD, 32 << 20, "M_MMAP_THRESHOLD 32 MiB"},
        {M_MMAP_THRESHOLD, (32 << 20) + 1, "M_MMAP_THRESHOLD 32 MiB + 1"},
        {M_MMAP_THRESHOLD, -1, "M_MMAP_THRESHOLD -1"},
        {M_MMAP_MAX, 65536, "M_MMAP_MAX 65536"},
        {M_CHECK_ACTION, 3, "M_CHECK_ACTION 3"},
        {M_PERTURB, 0, "M_PERTURB 0"},
        {M_ARENA_TEST, 8, "M_ARENA_TEST 8"},
        {M_ARENA_TEST, 0, "M_ARENA_TEST 0"},
        {M_ARENA_MAX, 4, "M_ARENA_MAX 4"},
        {M_ARENA_MAX, -5, "M_ARENA_MAX -5"},
        {12345, 1, "unknown parameter 12345"},
        {M_MMAP_THRESHOLD, 128 * 1024, "M_MMAP_THRESHOLD back to 128 KiB"},
        {M_TRIM_THRESHOLD, 128 * 1024, "M_TRIM_THRESHOLD back to 128 KiB"},
        {M_MXFAST, 128, "M_MXFAST back to 128"},
    };
    for (size_t i = 0; i < sizeof options / sizeof *options; i++) {
        errno = 0;
        int result = mallopt(options[i].param, options[i].value);
        printf("mallopt(%s) = %d, errno kept: %d\n", options[i].name, result, errno == 0);
    }

    /* mallinfo2 and mallinfo count the heap's own blocks: small blocks in `uordblks`,
     * mapped ones in `hblks`/`hblkhd`; `arena` covers what is in use. */
    struct mallinfo2 before = mallinfo2();
    enum { SMALL = 20000 };
    static void *small[SMALL];
    for (int i = 0; i < SMALL; i++) {
        small[i] = malloc(100);
        memset(small[i], 2, 100);
    }
    void *big = malloc(64 << 20);
    memset(big, 3, 1 << 20);
    struct mallinfo2 during = mallinfo2();
    struct mallinfo old_during = mallinfo();
    printf("mallinfo2: uordblks grows by the small blocks: %d\n",
           during.uordblks >= before.uordblks + SMALL * 100);
    printf("mallinfo2: arena covers uordblks: %d\n", during.arena >= during.uordblks);
    printf("mallinfo2: arena = uordblks + fordblks: %d\n",
           during.arena == during.uordblks + during.fordblks);
    printf("mallinfo2: a 64 MiB block counts in hblks and hblkhd: %d\n",
           during.hblks >= before.hblks + 1 && during.hblkhd >= before.hblkhd + (64 << 20));
    printf("mallinfo: agrees with mallinfo2 below 2 GiB: %d\n",
           (size_t)old_during.uordblks == during.uordblks &&
               (size_t)old_during.hblkhd == during.hblkhd);

    char text[8192];
    stats_text(text, sizeof text);
    printf("malloc_stats: prints system and in-use totals: %d\n",
           strstr(text, "Total (incl. mmap):") && strstr(text, "system bytes") &&
               strstr(text, "in use bytes"));
    printf("malloc_stats: in use counts the blocks: %d\n",
           stats_value(text, "in use bytes") >= SMALL * 100 + (64 << 20));

    for (int i = 0; i < SMALL; i++) free(small[i]);
    free(big);
    struct mallinfo2 after = mallinfo2();
    printf("mallinfo2: freed blocks leave uordblks: %d\n",
           after.uordblks + SMALL * 100 <= during.uordblks);
    printf("mallinfo2: the freed 64 MiB block leaves hblkhd: %d\n",
           after.hblkhd + (64 << 20) <= during.hblkhd);

    /* malloc_info: an XML document, options must be 0. */
    FILE *xml = tmpfile();
    int info = malloc_info(0, xml);
    rewind(xml);
    char document[65536];
    size_t length = fread(document, 1, sizeof document - 1, xml);
    document[length] = 0;
    fclose(xml);
    printf("malloc_info(0) = %d, a <malloc> document: %d\n", info,
           strncmp(document, "<malloc version=\"1\">", 20) == 0 &&
               strstr(document, "</malloc>\n") != NULL);
    errno = 0;
    info = malloc_info(1, stdout);
    printf("malloc_info(1) = %d, errno kept: %d\n", info, errno == 0);

    /* malloc_trim gives back the memory of freed blocks: 1 when it released some. A
     * block kept at the end stops glibc from trimming its heap top by itself. */
    enum { BLOCKS = 25000 };
    static void *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(4000);
        memset(blocks[i], 4, 4000);
    }
    void *fence = malloc(4000);
    size_t peak = resident();
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    int trimmed = malloc_trim(0);
    size_t trimmed_resident = resident();
    printf("malloc_trim(0) after freeing 100 MB = %d\n", trimmed);
    printf("malloc_trim(0): resident memory fell by 80 MB: %d\n",
           trimmed_resident + 80000000 <= peak);
    free(fence);
    return 0;
}
