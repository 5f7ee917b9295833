/* Large blocks freed and allocated over and over, as mimalloc-bench's malloc-large does
 * (5 to 25 MiB, 20 live), with some grown and shrunk by realloc in between: the library
 * keeps freed large blocks and hands them out again, split or grown. Every live block is
 * filled with its own byte and checked (a byte per page) before it is freed, so a block
 * handed out twice, or a piece of one handed out while still live, shows as a wrong byte.
 * Prints only whether every check held, as glibc's run does. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOTS = 20, ROUNDS = 300, PAGE = 4096 };

struct slot {
    unsigned char *block;
    size_t size;
    unsigned char tag;
};

static uint64_t state = 42;

static uint64_t next_random(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
}

/* Whether every page of the block (and its last byte) holds its tag. */
static int intact(const struct slot *slot) {
    for (size_t at = 0; at < slot->size; at += PAGE)
        if (slot->block[at] != slot->tag) return 0;
    return slot->block[slot->size - 1] == slot->tag;
}

int main(void) {
    struct slot slots[SLOTS] = {0};
    int all_intact = 1, all_allocated = 1, usable_ok = 1;
    for (int round = 0; round < ROUNDS; round++) {
        struct slot *slot = &slots[next_random() % SLOTS];
        size_t size = (5u << 20) + next_random() % (20u << 20);
        unsigned char tag = (unsigned char)(round % 251 + 1);
        unsigned char *block = malloc(size);
        if (!block) {
            all_allocated = 0;
            break;
        }
        if (malloc_usable_size(block) < size) usable_ok = 0;
        memset(block, tag, size);
        if (slot->block) {
            if (!intact(slot)) all_intact = 0;
            free(slot->block);
        }
        *slot = (struct slot){block, size, tag};
        if (round % 7 == 0) {
            /* Grow or shrink another live block; its bytes must follow it. */
            struct slot *other = &slots[next_random() % SLOTS];
            if (other->block) {
                size_t new_size = (1u << 20) + next_random() % (30u << 20);
                unsigned char *moved = realloc(other->block, new_size);
                if (!moved) {
                    all_allocated = 0;
                    break;
                }
                size_t kept = new_size < other->size ? new_size : other->size;
                other->block = moved;
                other->size = kept;
                if (!intact(other)) all_intact = 0;
                memset(moved, other->tag, new_size);
                other->size = new_size;
            }
        }
    }
    for (int index = 0; index < SLOTS; index++) {
        if (!slots[index].block) continue;
        if (!intact(&slots[index])) all_intact = 0;
        free(slots[index].block);
    }
    printf("every large block allocated: %d\n", all_allocated);
    printf("malloc_usable_size covers every request: %d\n", usable_ok);
    printf("every live large block kept its bytes: %d\n", all_intact);
    return 0;
}
