/*
 * ringbuf.c - a fixed-size ring buffer of bytes, as used between an interrupt
 * handler that receives characters and a main loop that consumes them.
 *
 * One slot is always left empty so that "full" and "empty" can be told apart
 * without a separate counter.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define RING_CAPACITY 16

struct ring {
    unsigned char data[RING_CAPACITY];
    size_t head; /* next slot to write */
    size_t tail; /* next slot to read */
};

static size_t next_index(size_t i)
{
    return (i + 1) % RING_CAPACITY;
}

void ring_init(struct ring *r)
{
    memset(r->data, 0, sizeof r->data);
    r->head = 0;
    r->tail = 0;
}

bool ring_empty(const struct ring *r)
{
    return r->head == r->tail;
}

bool ring_full(const struct ring *r)
{
    return next_index(r->head) == r->tail;
}

/* Number of bytes waiting to be read. */
size_t ring_len(const struct ring *r)
{
    if (r->head >= r->tail)
        return r->head - r->tail;
    return RING_CAPACITY - r->tail + r->head;
}

/*
 * Append one byte. Returns false, and drops the byte, when the buffer is full:
 * the producer must never block.
 */
bool ring_push(struct ring *r, unsigned char c)
{
    if (ring_full(r))
        return false;
    r->data[r->head] = c;
    r->head = next_index(r->head);
    return true;
}

/* Remove the oldest byte into *out. Returns false when there is none. */
bool ring_pop(struct ring *r, unsigned char *out)
{
    if (ring_empty(r))
        return false;
    *out = r->data[r->tail];
    r->tail = next_index(r->tail);
    return true;
}

/* Copy up to n bytes out in order; returns how many were copied. */
size_t ring_read(struct ring *r, unsigned char *buf, size_t n)
{
    size_t copied = 0;
    while (copied < n && ring_pop(r, &buf[copied]))
        copied++;
    return copied;
}

static void print_state(const char *label, const struct ring *r)
{
    printf("%-12s len=%2zu head=%2zu tail=%2zu%s%s\n", label, ring_len(r),
           r->head, r->tail, ring_empty(r) ? " empty" : "",
           ring_full(r) ? " full" : "");
}

int main(void)
{
    struct ring r;
    unsigned char out[RING_CAPACITY];
    const char *message = "hello, ring buffer world";
    size_t dropped = 0;

    ring_init(&r);
    print_state("start", &r);

    for (size_t i = 0; message[i] != '\0'; i++) {
        if (!ring_push(&r, (unsigned char)message[i]))
            dropped++;
    }
    print_state("after push", &r);
    printf("dropped %zu bytes\n", dropped);

    size_t n = ring_read(&r, out, sizeof out);
    printf("read %zu bytes: %.*s\n", n, (int)n, (const char *)out);
    print_state("after read", &r);
    return 0;
}
