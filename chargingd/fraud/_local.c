/* The authorize rules of fraud/local.py evaluated in C, on the stored value's bytes.

local.py's evaluation works on the value decoded to Python dicts, tuples and ints: ~80k
instructions per call of CPython's generic object work (docs/fraud-cost.md, "Eighteenth
round, measured"). This module does the same on a small typed tree parsed from the
value's msgpack bytes, and packs the tree back as local.py's Packer does (use_bin_type
False, dicts in insertion order), so its bytes are exactly local.py's: the value a call
leaves is the same whichever of the two evaluated it (tests/fraud/test_local_c.py
compares them on random values and calls).

It evaluates only what it understands exactly. Anything else (a number that is not an
integer of at most 2**52 where the rules compute with it, a key that is neither bytes
nor an integer, ext types, damaged bytes, a zero width, an overflow) makes it answer
BAIL, and local.py evaluates the call itself, as it always did. So a value only ever
takes the Python port's semantics, which the differential tests hold to fraud.lua's.

evaluate(ops, raw, ip_raw, now, identity, sid, number, country, number_hash, ttl_ms,
         ip_ttl_ms)
  ops: a capsule from compile_ops; raw: the account's stored bytes (b"": none);
  ip_raw: the caller IP's (None: the account's value counts for the IP too);
  identity, sid, number, country: str; the rest int.
  -> -1 (BAIL: evaluate in Python), 0 (seen: fraud.lua decides), 1 (a rule refuses or
     blocks: fraud.lua decides), or (worst_i, fired, value, px, ip_value, ip_px) where
     value / ip_value are the new bytes or None (unchanged, not written).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NB 10
#define G_MAX 64
#define DAY_MS 86400000LL
#define PRUNE_MS 10000LL
#define BIG (1LL << 52) /* integers the rules compute with stay within +-BIG */
#define MAX_DEPTH 32
#define MAX_OPS 64

enum { K_COUNT, K_IDENTITY, K_RANGE, K_DISTINCT, K_LIVE, K_COUNTRY, K_NONE, K_DENY };
enum { T_NIL, T_BOOL, T_INT, T_FLOAT, T_BYTES, T_ARR, T_MAP };

/* ---------------------------------------------------------------- the arena ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk;

static chunk *first_chunk; /* kept between calls (the GIL is held throughout) */

typedef struct {
    chunk *head;
    int failed;
} arena;

static void *aalloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    chunk *c = a->head;
    if (c == NULL || c->used + n > c->cap) {
        size_t cap = n > 65536 ? n : 65536;
        chunk *nc = (chunk *)PyMem_RawMalloc(sizeof(chunk) + cap);
        if (nc == NULL) {
            a->failed = 1;
            return NULL;
        }
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

#define FIRST_CAP (256 * 1024)

static void arena_start(arena *a) {
    a->failed = 0;
    if (first_chunk == NULL) {
        first_chunk = (chunk *)PyMem_RawMalloc(sizeof(chunk) + FIRST_CAP);
        if (first_chunk != NULL)
            first_chunk->cap = FIRST_CAP;
    }
    if (first_chunk != NULL) {
        first_chunk->used = 0;
        first_chunk->next = NULL;
    }
    a->head = first_chunk;
}

static void arena_end(arena *a) {
    /* chunks made past the first are in front of it: freed */
    chunk *c = a->head;
    while (c != NULL && c != first_chunk) {
        chunk *next = c->next;
        PyMem_RawFree(c);
        c = next;
    }
    a->head = NULL;
}

/* ---------------------------------------------------------------- the tree ---- */

typedef struct node node;
typedef struct ent ent;

struct node {
    uint8_t t;
    uint8_t b;      /* a bool's value */
    uint32_t n;     /* bytes: length; array: items; map: entries, dead ones too */
    uint32_t cap;   /* map: entries allocated */
    uint32_t live;  /* map: entries not deleted */
    union {
        int64_t i;
        double f;
        const char *s;
        node *a;
        ent *m;
    } u;
};

struct ent {
    node k, v;
    int dead;
};

typedef struct {
    const unsigned char *p, *end;
    arena *a;
} reader;

#define BAIL (-1)

static int need(reader *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int parse(reader *r, node *out, int depth);

static int parse_str(reader *r, node *out, size_t n) {
    if (!need(r, n) || n > UINT32_MAX)
        return BAIL;
    out->t = T_BYTES;
    out->n = (uint32_t)n;
    out->u.s = (const char *)r->p;
    r->p += n;
    return 0;
}

static int parse_arr(reader *r, node *out, size_t n, int depth) {
    if (n > (size_t)(r->end - r->p)) /* each item is a byte at least */
        return BAIL;
    out->t = T_ARR;
    out->n = (uint32_t)n;
    out->u.a = NULL;
    if (n) {
        out->u.a = (node *)aalloc(r->a, n * sizeof(node));
        if (out->u.a == NULL)
            return BAIL;
        for (size_t i = 0; i < n; i++)
            if (parse(r, &out->u.a[i], depth + 1) < 0)
                return BAIL;
    }
    return 0;
}

static int same_key(const node *x, const node *y) {
    if (x->t != y->t)
        return 0;
    if (x->t == T_INT)
        return x->u.i == y->u.i;
    return x->n == y->n && (x->n == 0 || memcmp(x->u.s, y->u.s, x->n) == 0);
}

static uint64_t key_hash(const node *k) {
    uint64_t h;
    if (k->t == T_INT) {
        h = (uint64_t)k->u.i;
    } else if (k->n >= 8) { /* the length and the first and last 8 bytes */
        uint64_t x, y;
        memcpy(&x, k->u.s, 8);
        memcpy(&y, k->u.s + k->n - 8, 8);
        h = (x * 0x9E3779B97F4A7C15ULL) ^ (y + k->n);
    } else {
        h = k->n;
        for (uint32_t i = 0; i < k->n; i++)
            h = (h << 8) | (unsigned char)k->u.s[i];
        h = ~h;
    }
    h ^= h >> 33; /* murmur3's finalizer: every bit of h moves the low ones, the slot */
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

/* Whether a parsed map has each key once. msgpack's unpackb makes a dict: a key met
   twice is kept once, where it came first, with its last value; such a map is declined
   (0) rather than read otherwise. */
static int keys_once(arena *a, const node *m) {
    uint32_t n = m->n;
    const ent *e = m->u.m;
    if (n <= 8) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = 0; j < i; j++)
                if (same_key(&e[i].k, &e[j].k))
                    return 0;
        return 1;
    }
    size_t size = 16;
    while (size < 2 * (size_t)n)
        size *= 2;
    uint32_t *slots = (uint32_t *)aalloc(a, size * sizeof(uint32_t));
    if (slots == NULL)
        return 0;
    memset(slots, 0, size * sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++) {
        size_t h = (size_t)key_hash(&e[i].k) & (size - 1);
        while (slots[h] != 0) {
            if (same_key(&e[slots[h] - 1].k, &e[i].k))
                return 0;
            h = (h + 1) & (size - 1);
        }
        slots[h] = i + 1;
    }
    return 1;
}

static int parse_map(reader *r, node *out, size_t n, int depth) {
    if (n > (size_t)(r->end - r->p) / 2)
        return BAIL;
    out->t = T_MAP;
    out->n = out->live = (uint32_t)n;
    out->cap = (uint32_t)n;
    out->u.m = NULL;
    if (n) {
        out->u.m = (ent *)aalloc(r->a, n * sizeof(ent));
        if (out->u.m == NULL)
            return BAIL;
        for (size_t i = 0; i < n; i++) {
            ent *e = &out->u.m[i];
            e->dead = 0;
            if (parse(r, &e->k, depth + 1) < 0)
                return BAIL;
            if (e->k.t != T_BYTES && e->k.t != T_INT)
                return BAIL; /* keys the tree does not compare as Python does */
            if (parse(r, &e->v, depth + 1) < 0)
                return BAIL;
        }
        if (n > 1 && !keys_once(r->a, out))
            return BAIL;
    }
    return 0;
}

static int parse(reader *r, node *out, int depth) {
    if (depth > MAX_DEPTH || !need(r, 1))
        return BAIL;
    unsigned c = *r->p++;
    out->b = 0;
    if (c <= 0x7f) {
        out->t = T_INT;
        out->u.i = c;
        return 0;
    }
    if (c >= 0xe0) {
        out->t = T_INT;
        out->u.i = (int64_t)(int8_t)c;
        return 0;
    }
    if (c <= 0x8f)
        return parse_map(r, out, c & 0x0f, depth);
    if (c <= 0x9f)
        return parse_arr(r, out, c & 0x0f, depth);
    if (c <= 0xbf)
        return parse_str(r, out, c & 0x1f);
    switch (c) {
    case 0xc0:
        out->t = T_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        out->t = T_BOOL;
        out->b = c == 0xc3;
        return 0;
    case 0xc4: case 0xd9:
        if (!need(r, 1)) return BAIL;
        r->p += 1;
        return parse_str(r, out, r->p[-1]);
    case 0xc5: case 0xda:
        if (!need(r, 2)) return BAIL;
        r->p += 2;
        return parse_str(r, out, (size_t)be(r->p - 2, 2));
    case 0xc6: case 0xdb:
        if (!need(r, 4)) return BAIL;
        r->p += 4;
        return parse_str(r, out, (size_t)be(r->p - 4, 4));
    case 0xca: {
        if (!need(r, 4)) return BAIL;
        uint32_t bits = (uint32_t)be(r->p, 4);
        float f;
        memcpy(&f, &bits, 4);
        r->p += 4;
        out->t = T_FLOAT;
        out->u.f = (double)f;
        return 0;
    }
    case 0xcb: {
        if (!need(r, 8)) return BAIL;
        uint64_t bits = be(r->p, 8);
        memcpy(&out->u.f, &bits, 8);
        r->p += 8;
        out->t = T_FLOAT;
        return 0;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int n = 1 << (c - 0xcc);
        if (!need(r, (size_t)n)) return BAIL;
        uint64_t v = be(r->p, n);
        r->p += n;
        if (v > (uint64_t)INT64_MAX)
            return BAIL;
        out->t = T_INT;
        out->u.i = (int64_t)v;
        return 0;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (c - 0xd0);
        if (!need(r, (size_t)n)) return BAIL;
        uint64_t v = be(r->p, n);
        r->p += n;
        int64_t s;
        if (n == 1) s = (int8_t)v;
        else if (n == 2) s = (int16_t)v;
        else if (n == 4) s = (int32_t)v;
        else s = (int64_t)v;
        out->t = T_INT;
        out->u.i = s;
        return 0;
    }
    case 0xdc:
        if (!need(r, 2)) return BAIL;
        r->p += 2;
        return parse_arr(r, out, (size_t)be(r->p - 2, 2), depth);
    case 0xdd:
        if (!need(r, 4)) return BAIL;
        r->p += 4;
        return parse_arr(r, out, (size_t)be(r->p - 4, 4), depth);
    case 0xde:
        if (!need(r, 2)) return BAIL;
        r->p += 2;
        return parse_map(r, out, (size_t)be(r->p - 2, 2), depth);
    case 0xdf:
        if (!need(r, 4)) return BAIL;
        r->p += 4;
        return parse_map(r, out, (size_t)be(r->p - 4, 4), depth);
    default: /* 0xc1 (never used), ext types */
        return BAIL;
    }
}

/* ---------------------------------------------------------------- packing ---- */

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} wbuf;

static char *wbuf_room(wbuf *w, size_t n) {
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->n + n)
            cap *= 2;
        char *p = (char *)PyMem_RawRealloc(w->p, cap);
        if (p == NULL) {
            w->failed = 1;
            return NULL;
        }
        w->p = p;
        w->cap = cap;
    }
    char *out = w->p + w->n;
    w->n += n;
    return out;
}

static void put_be(char *p, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static void pack_head(wbuf *w, unsigned tag, uint64_t v, int n) {
    char *p = wbuf_room(w, 1 + (size_t)n);
    if (p == NULL)
        return;
    p[0] = (char)tag;
    put_be(p + 1, v, n);
}

static void pack_int(wbuf *w, int64_t v) {
    if (v >= 0) {
        if (v < 128) pack_head(w, (unsigned)v, 0, 0);
        else if (v < 256) pack_head(w, 0xcc, (uint64_t)v, 1);
        else if (v < 65536) pack_head(w, 0xcd, (uint64_t)v, 2);
        else if (v < 4294967296LL) pack_head(w, 0xce, (uint64_t)v, 4);
        else pack_head(w, 0xcf, (uint64_t)v, 8);
    } else {
        if (v >= -32) pack_head(w, (unsigned)(uint8_t)(int8_t)v, 0, 0);
        else if (v >= -128) pack_head(w, 0xd0, (uint64_t)v & 0xff, 1);
        else if (v >= -32768) pack_head(w, 0xd1, (uint64_t)v & 0xffff, 2);
        else if (v >= -2147483648LL) pack_head(w, 0xd2, (uint64_t)v & 0xffffffff, 4);
        else pack_head(w, 0xd3, (uint64_t)v, 8);
    }
}

static void pack_bytes(wbuf *w, const char *s, size_t n) {
    /* use_bin_type=False: fixraw, raw16, raw32 (no str8) */
    if (n < 32) pack_head(w, 0xa0 | (unsigned)n, 0, 0);
    else if (n < 65536) pack_head(w, 0xda, n, 2);
    else pack_head(w, 0xdb, n, 4);
    char *p = wbuf_room(w, n);
    if (p != NULL && n)
        memcpy(p, s, n);
}

static void pack_len(wbuf *w, unsigned fix, unsigned t16, uint32_t n) {
    if (n < 16) pack_head(w, fix | n, 0, 0);
    else if (n < 65536) pack_head(w, t16, n, 2);
    else pack_head(w, t16 + 1, n, 4);
}

static void pack(wbuf *w, const node *v) {
    switch (v->t) {
    case T_NIL: pack_head(w, 0xc0, 0, 0); break;
    case T_BOOL: pack_head(w, v->b ? 0xc3 : 0xc2, 0, 0); break;
    case T_INT: pack_int(w, v->u.i); break;
    case T_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->u.f, 8);
        pack_head(w, 0xcb, bits, 8);
        break;
    }
    case T_BYTES: pack_bytes(w, v->u.s, v->n); break;
    case T_ARR:
        pack_len(w, 0x90, 0xdc, v->n);
        for (uint32_t i = 0; i < v->n; i++)
            pack(w, &v->u.a[i]);
        break;
    case T_MAP:
        pack_len(w, 0x80, 0xde, v->live);
        for (uint32_t i = 0; i < v->n; i++) {
            const ent *e = &v->u.m[i];
            if (e->dead)
                continue;
            pack(w, &e->k);
            pack(w, &e->v);
        }
        break;
    }
}

/* ---------------------------------------------------------------- maps ---- */

static int key_is(const node *k, const char *s, size_t n) {
    return k->t == T_BYTES && k->n == n && (n == 0 || memcmp(k->u.s, s, n) == 0);
}

/* The live entry keyed by the bytes s, or NULL. */
static ent *ment(node *m, const char *s, size_t n) {
    for (uint32_t i = 0; i < m->n; i++) {
        ent *e = &m->u.m[i];
        if (!e->dead && key_is(&e->k, s, n))
            return e;
    }
    return NULL;
}

/* Its value, or NULL. */
static node *mget(node *m, const char *s, size_t n) {
    ent *e = ment(m, s, n);
    return e != NULL ? &e->v : NULL;
}

static ent *mget_int(node *m, int64_t k) {
    for (uint32_t i = 0; i < m->n; i++) {
        ent *e = &m->u.m[i];
        if (!e->dead && e->k.t == T_INT && e->k.u.i == k)
            return e;
    }
    return NULL;
}

/* A new entry at the end (Python: a key not in the dict); NULL when out of memory. */
static ent *mappend(arena *a, node *m) {
    if (m->n == m->cap) {
        uint32_t cap = m->cap < 4 ? 8 : m->cap * 2;
        ent *grown = (ent *)aalloc(a, cap * sizeof(ent));
        if (grown == NULL)
            return NULL;
        if (m->n)
            memcpy(grown, m->u.m, m->n * sizeof(ent));
        m->u.m = grown;
        m->cap = cap;
    }
    ent *e = &m->u.m[m->n++];
    e->dead = 0;
    m->live++;
    return e;
}

static node bytes_node(const char *s, size_t n) {
    node k;
    memset(&k, 0, sizeof k);
    k.t = T_BYTES;
    k.n = (uint32_t)n;
    k.u.s = s;
    return k;
}

static node int_node(int64_t v) {
    node k;
    memset(&k, 0, sizeof k);
    k.t = T_INT;
    k.u.i = v;
    return k;
}

static node map_node(void) {
    node k;
    memset(&k, 0, sizeof k);
    k.t = T_MAP;
    return k;
}

/* m[key] = v: in place if the key is there, else appended. The value's slot or NULL. */
static node *mset(arena *a, node *m, const char *s, size_t n, node v) {
    node *slot = mget(m, s, n);
    if (slot != NULL) {
        *slot = v;
        return slot;
    }
    ent *e = mappend(a, m);
    if (e == NULL)
        return NULL;
    e->k = bytes_node(s, n);
    e->v = v;
    return &e->v;
}

static void mdel(node *m, ent *e) {
    e->dead = 1;
    m->live--;
}

/* local.py _table: the map under field, made when absent; an array becomes the map
   {1: item, ...}; anything else is replaced by an empty map. */
static node *table(arena *a, node *value, const char *field, size_t fn) {
    node *t = mget(value, field, fn);
    if (t != NULL && t->t == T_MAP)
        return t;
    node out = map_node();
    if (t != NULL && t->t == T_ARR && t->n) {
        out.u.m = (ent *)aalloc(a, t->n * sizeof(ent));
        if (out.u.m == NULL)
            return NULL;
        out.n = out.cap = out.live = t->n;
        for (uint32_t i = 0; i < t->n; i++) {
            out.u.m[i].dead = 0;
            out.u.m[i].k = int_node((int64_t)i + 1);
            out.u.m[i].v = t->u.a[i];
        }
    }
    return mset(a, value, field, fn, out);
}

/* Python's truthiness of a stored field read as `x or 0`: its integer, or BAIL. */
static int int_or_zero(const node *v, int64_t *out) {
    if (v == NULL) { *out = 0; return 0; }
    switch (v->t) {
    case T_NIL: *out = 0; return 0;
    case T_BOOL: if (!v->b) { *out = 0; return 0; } return BAIL;
    case T_INT: if (v->u.i > BIG || v->u.i < -BIG) return BAIL; *out = v->u.i; return 0;
    case T_FLOAT: if (v->u.f == 0.0) { *out = 0; return 0; } return BAIL;
    case T_BYTES: if (v->n == 0) { *out = 0; return 0; } return BAIL;
    case T_ARR: if (v->n == 0) { *out = 0; return 0; } return BAIL;
    case T_MAP: if (v->live == 0) { *out = 0; return 0; } return BAIL;
    }
    return BAIL;
}

static int small_int(const node *v) {
    return v->t == T_INT && v->u.i <= BIG && v->u.i >= -BIG;
}

static int64_t floordiv(int64_t a, int64_t b) { /* Python's // (b != 0) */
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* local.py _before: of keys alike, which is dropped first */
static int before(const node *a, const node *b) {
    int an = a->t != T_BYTES, bn = b->t != T_BYTES;
    if (an != bn)
        return an;
    if (an)
        return a->u.i < b->u.i;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->u.s, b->u.s, n) : 0;
    if (c != 0)
        return c < 0;
    return a->n < b->n;
}

/* ---------------------------------------------------------------- the rules ---- */

typedef struct {
    int32_t kind, on_ip, rank, counts;
    int64_t win, width, limit, extra;
    char *slot, *pre;
    size_t slot_n, pre_n;
} cop;

typedef struct {
    Py_ssize_t n;
    cop ops[];
} cops;

typedef struct {
    int64_t now;
    const char *identity, *sid, *number, *country;
    Py_ssize_t identity_n, sid_n, number_n, country_n;
    int64_t number_hash;
} call_t;

static const char *cat(arena *a, const char *x, size_t xn, const char *y, size_t yn) {
    char *p = (char *)aalloc(a, xn + yn + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, x, xn);
    memcpy(p + xn, y, yn);
    return p;
}

/* local.py _bucket: one call counted in the counter cid of map w; the count or BAIL */
static int64_t bucket(arena *a, node *w, const char *cid, size_t cn, int64_t now, int64_t win,
                      int64_t width) {
    if (width <= 0)
        return BAIL;
    ent *e = ment(w, cid, cn);
    node *old = e ? &e->v : NULL;
    if (old != NULL && old->t != T_ARR && !small_int(old))
        return BAIL;
    int one = old != NULL && old->t == T_INT;
    if (old == NULL || (one && old->u.i < now)) {
        if (mset(a, w, cid, cn, int_node(now + win)) == NULL)
            return BAIL;
        return 1;
    }
    int64_t cur = floordiv(now, width);
    if (one) {
        int64_t at = old->u.i - win;
        int64_t b = floordiv(at, width);
        node arr;
        memset(&arr, 0, sizeof arr);
        arr.t = T_ARR;
        arr.n = b == cur ? 4 : 7;
        arr.u.a = (node *)aalloc(a, arr.n * sizeof(node));
        if (arr.u.a == NULL)
            return BAIL;
        arr.u.a[0] = int_node(width);
        if (b == cur) {
            arr.u.a[1] = int_node(cur);
            arr.u.a[2] = int_node(2);
            arr.u.a[3] = int_node(now - cur * width);
        } else {
            arr.u.a[1] = int_node(b);
            arr.u.a[2] = int_node(1);
            arr.u.a[3] = int_node(at - b * width);
            arr.u.a[4] = int_node(cur);
            arr.u.a[5] = int_node(1);
            arr.u.a[6] = int_node(now - cur * width);
        }
        *old = arr; /* in place: nothing was appended to w */
        return 2;
    }
    uint32_t n = old->n;
    if (n == 0)
        return BAIL; /* old[0] of an empty tuple: Python raises */
    for (uint32_t k = 0; k < n; k++)
        if (!small_int(&old->u.a[k]))
            return BAIL;
    int64_t start = now - win;
    int64_t lo = floordiv(start, width);
    node *kept = (node *)aalloc(a, ((size_t)n + 3) * sizeof(node));
    if (kept == NULL)
        return BAIL;
    uint32_t kn = 0;
    kept[kn++] = old->u.a[0];
    int64_t total = 0;
    for (uint32_t k = 1; (int64_t)k < (int64_t)n - 2; k += 3) {
        int64_t b = old->u.a[k].u.i, c = old->u.a[k + 1].u.i, at = old->u.a[k + 2].u.i;
        int64_t bw;
        if (__builtin_mul_overflow(b, width, &bw))
            return BAIL;
        if (b > lo || (b == lo && bw + at >= start)) {
            kept[kn++] = old->u.a[k];
            kept[kn++] = old->u.a[k + 1];
            kept[kn++] = old->u.a[k + 2];
            if (__builtin_add_overflow(total, c, &total))
                return BAIL; /* Python's sum does not wrap */
        }
    }
    int64_t at = now - cur * width;
    if (kn > 1 && kept[kn - 3].u.i == cur) {
        kept[kn - 2] = int_node(kept[kn - 2].u.i + 1);
        kept[kn - 1] = int_node(at);
    } else {
        kept[kn++] = int_node(cur);
        kept[kn++] = int_node(1);
        kept[kn++] = int_node(at);
    }
    old->t = T_ARR;
    old->n = kn;
    old->u.a = kept;
    return total + 1;
}

/* local.py _cap */
static int cap_counters(node *t, const char *cid, size_t cn) {
    if (t->live <= G_MAX)
        return 0;
    ent *once = NULL, *many = NULL;
    int64_t once_at = 0, many_at = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        ent *e = &t->u.m[i];
        if (e->dead || key_is(&e->k, cid, cn))
            continue;
        node *c = &e->v;
        if (c->t == T_INT) {
            if (!small_int(c))
                return BAIL;
            if (once == NULL || c->u.i < once_at || (c->u.i == once_at && before(&e->k, &once->k))) {
                once = e;
                once_at = c->u.i;
            }
        } else if (c->t == T_ARR && c->n >= 3) {
            node *x = c->u.a;
            if (!small_int(&x[c->n - 3]) || !small_int(&x[0]) || !small_int(&x[c->n - 1]))
                return BAIL;
            int64_t last;
            if (__builtin_mul_overflow(x[c->n - 3].u.i, x[0].u.i, &last))
                return BAIL;
            if (__builtin_add_overflow(last, x[c->n - 1].u.i, &last))
                return BAIL;
            if (many == NULL || last < many_at || (last == many_at && before(&e->k, &many->k))) {
                many = e;
                many_at = last;
            }
        } else {
            return BAIL;
        }
    }
    ent *drop = once != NULL ? once : many;
    if (drop != NULL)
        mdel(t, drop);
    return 0;
}

static int64_t capped(arena *a, node *value, const char *part, const char *cid, size_t cn,
                      int64_t now, int64_t win, int64_t width) {
    node *t = table(a, value, part, strlen(part));
    if (t == NULL)
        return BAIL;
    int fresh = ment(t, cid, cn) == NULL;
    int64_t count = bucket(a, t, cid, cn, now, win, width);
    if (count < 0)
        return BAIL;
    if (fresh && cap_counters(t, cid, cn) < 0)
        return BAIL;
    return count;
}

/* local.py _distinct */
static int64_t distinct(arena *a, node *value, int64_t now, const cop *op, int64_t h) {
    node *outer = table(a, value, "n", 1);
    if (outer == NULL)
        return BAIL;
    node *n = table(a, outer, op->slot, op->slot_n);
    if (n == NULL)
        return BAIL;
    int64_t up = floordiv(now + 999, 1000);
    ent *e = mget_int(n, h);
    if (e != NULL) {
        e->v = int_node(up);
    } else {
        e = mappend(a, n);
        if (e == NULL)
            return BAIL;
        e->k = int_node(h);
        e->v = int_node(up);
    }
    int64_t count = 0, start = now - op->win;
    for (uint32_t i = 0; i < n->n; i++) {
        ent *x = &n->u.m[i];
        if (x->dead)
            continue;
        if (!small_int(&x->v))
            return BAIL;
        if (x->v.u.i * 1000 < start)
            mdel(n, x);
        else
            count++;
    }
    if (count > op->limit + 1) {
        ent *oldest = NULL;
        for (uint32_t i = 0; i < n->n; i++) {
            ent *x = &n->u.m[i];
            if (x->dead)
                continue;
            if (oldest == NULL || x->v.u.i < oldest->v.u.i ||
                (x->v.u.i == oldest->v.u.i && before(&x->k, &oldest->k)))
                oldest = x;
        }
        if (oldest == NULL)
            return BAIL; /* (a limit below -1: Python's del of None raises) */
        mdel(n, oldest);
    }
    return count;
}

/* local.py _live */
static int64_t live_count(node *value, int64_t now, const call_t *call) {
    node *live = mget(value, "l", 1);
    int64_t n = 0;
    if (live != NULL && live->t == T_MAP) {
        for (uint32_t i = 0; i < live->n; i++) {
            ent *e = &live->u.m[i];
            if (e->dead)
                continue;
            if (!small_int(&e->v))
                return BAIL;
            if (e->v.u.i * 1000 > now && !key_is(&e->k, call->sid, (size_t)call->sid_n))
                n++;
        }
    }
    return n + 1;
}

/* local.py _admit_live */
static int admit_live(arena *a, node *value, int64_t now, const call_t *call, int64_t win,
                      int64_t limit) {
    node *live = table(a, value, "l", 1);
    if (live == NULL)
        return BAIL;
    if (mset(a, live, call->sid, (size_t)call->sid_n, int_node(floordiv(now + win + 999, 1000))) == NULL)
        return BAIL;
    int64_t n = 0;
    ent *first = NULL;
    for (uint32_t i = 0; i < live->n; i++) {
        ent *e = &live->u.m[i];
        if (e->dead)
            continue;
        if (!small_int(&e->v))
            return BAIL;
        if (e->v.u.i * 1000 <= now) {
            mdel(live, e);
        } else {
            n++;
            if (first == NULL || e->v.u.i < first->v.u.i ||
                (e->v.u.i == first->v.u.i && before(&e->k, &first->k)))
                first = e;
        }
    }
    if (n > limit + 1) {
        if (first == NULL)
            return BAIL;
        mdel(live, first);
    }
    return 0;
}

/* local.py _prune_table */
static int prune_table(node *w, int64_t now) {
    if (w == NULL || w->t != T_MAP)
        return 0;
    for (uint32_t i = 0; i < w->n; i++) {
        ent *e = &w->u.m[i];
        if (e->dead)
            continue;
        node *c = &e->v;
        if (c->t == T_INT) {
            if (!small_int(c))
                return BAIL;
            if (c->u.i < now)
                mdel(w, e);
        } else if (c->t == T_ARR && c->n >= 3) {
            if (!small_int(&c->u.a[0]) || !small_int(&c->u.a[c->n - 3]) || c->u.a[0].u.i == 0)
                return BAIL;
            if (c->u.a[c->n - 3].u.i < floordiv(now, c->u.a[0].u.i) - NB - 1)
                mdel(w, e);
        } else {
            return BAIL;
        }
    }
    return 0;
}

static int prune(arena *a, node *value, int64_t now) {
    int64_t p;
    if (int_or_zero(mget(value, "p", 1), &p) < 0)
        return BAIL;
    if (p > now)
        return 0;
    if (mset(a, value, "p", 1, int_node(now + PRUNE_MS)) == NULL)
        return BAIL;
    if (prune_table(mget(value, "w", 1), now) < 0 || prune_table(mget(value, "g", 1), now) < 0 ||
        prune_table(mget(value, "h", 1), now) < 0)
        return BAIL;
    return 0;
}

/* local.py _expiry: the PX, or BAIL */
static int64_t expiry(arena *a, node *value, int64_t now, int64_t ttl) {
    int64_t until = now + ttl, x;
    if (int_or_zero(mget(value, "x", 1), &x) < 0)
        return BAIL;
    if (x > until)
        until = x;
    if (mset(a, value, "x", 1, int_node(until)) == NULL)
        return BAIL;
    return until - now;
}

/* local.py _seen: 1 seen, 0 not, BAIL */
static int seen(node *v, const call_t *call) {
    const char *sid = call->sid;
    size_t sn = (size_t)call->sid_n;
    node *recent = mget(v, "r", 1);
    if (recent != NULL && recent->t == T_MAP && mget(recent, sid, sn) != NULL)
        return 1;
    int64_t ro;
    if (int_or_zero(mget(v, "ro", 2), &ro) < 0)
        return BAIL;
    if (ro > call->now)
        return 1;
    node *live = mget(v, "l", 1);
    if (live != NULL && live->t == T_MAP && mget(live, sid, sn) != NULL)
        return 1;
    node *counted = mget(v, "q", 1);
    if (counted != NULL && counted->t == T_ARR) {
        for (uint32_t i = 0; i < counted->n; i++)
            if (key_is(&counted->u.a[i], sid, sn))
                return 1;
    }
    node *deny = mget(v, "d", 1);
    if (deny != NULL && deny->t == T_MAP) {
        for (uint32_t i = 0; i < deny->n; i++) {
            ent *e = &deny->u.m[i];
            if (e->dead)
                continue;
            if (!small_int(&e->v) || e->k.t != T_BYTES)
                return BAIL;
            if (e->v.u.i > call->now) {
                const char *bar = e->k.n ? memchr(e->k.u.s, '|', e->k.n) : NULL;
                if (bar == NULL)
                    return 1;
                size_t wn = e->k.n - (size_t)(bar + 1 - e->k.u.s);
                if (wn == 0 || (wn == (size_t)call->identity_n && memcmp(bar + 1, call->identity, wn) == 0))
                    return 1;
            }
        }
    }
    return 0;
}

/* local.py _count: one op's count, or BAIL */
static int64_t count_op(arena *a, const cop *op, node *val, node *v, const call_t *call) {
    int64_t now = call->now;
    switch (op->kind) {
    case K_COUNT: {
        node *w = mget(val, "w", 1);
        if (w == NULL || w->t != T_MAP)
            return BAIL; /* val[W] is a map after unpack */
        return bucket(a, w, op->slot, op->slot_n, now, op->win, op->width);
    }
    case K_IDENTITY: {
        const char *cid = cat(a, op->pre, op->pre_n, call->identity, (size_t)call->identity_n);
        if (cid == NULL)
            return BAIL;
        return capped(a, val, "h", cid, op->pre_n + (size_t)call->identity_n, now, op->win, op->width);
    }
    case K_RANGE: {
        int64_t e = (int64_t)call->number_n - op->extra;
        if (e < 2)
            e = 2;
        if (e > call->number_n)
            e = call->number_n;
        const char *cid = cat(a, op->pre, op->pre_n, call->number, (size_t)e);
        if (cid == NULL)
            return BAIL;
        return capped(a, val, "g", cid, op->pre_n + (size_t)e, now, op->win, op->width);
    }
    case K_DISTINCT:
        return distinct(a, val, now, op, call->number_hash);
    case K_LIVE:
        return live_count(val, now, call);
    case K_DENY: { /* local.py K_DENY: the rule's deny flag in the caller IP's value */
        node *deny = mget(val, "d", 1);
        if (deny == NULL || deny->t != T_MAP)
            return 0;
        node *until = mget(deny, op->slot, op->slot_n);
        if (until == NULL)
            return 0;
        if (!small_int(until))
            return BAIL;
        return until->u.i > now ? 1 : 0;
    }
    case K_COUNTRY: {
        node *countries = mget(v, "c", 1);
        if (countries == NULL || countries->t != T_MAP)
            return 0;
        node *last = mget(countries, call->country, (size_t)call->country_n);
        int64_t at = 0;
        if (last != NULL) {
            if (!small_int(last))
                return BAIL;
            at = last->u.i;
        }
        return at < now - op->win ? (int64_t)countries->live : 0;
    }
    default:
        return 0;
    }
}

/* local.py _admit: 1 when the value changed, 0 not, BAIL */
static int admit(arena *a, const cops *ops, node *v, const call_t *call) {
    int dirty = 0;
    int64_t now = call->now;
    for (Py_ssize_t i = 0; i < ops->n; i++) {
        const cop *op = &ops->ops[i];
        if (op->kind == K_LIVE) {
            if (admit_live(a, v, now, call, op->win, op->limit) < 0)
                return BAIL;
            dirty = 1;
        } else if (op->kind == K_COUNTRY) {
            node *c = table(a, v, "c", 1);
            if (c == NULL)
                return BAIL;
            int64_t last;
            if (int_or_zero(mget(c, call->country, (size_t)call->country_n), &last) < 0)
                return BAIL;
            double q = (double)op->win / 100.0;
            int older;
            if (q < (double)DAY_MS) /* min(DAY_MS, win / 100) is the float */
                older = (double)last < (double)now - q;
            else
                older = last < now - DAY_MS;
            if (older) {
                if (mset(a, c, call->country, (size_t)call->country_n, int_node(now)) == NULL)
                    return BAIL;
                dirty = 1;
            }
        }
    }
    return dirty;
}

/* ---------------------------------------------------------------- Python ---- */

static void ops_free(PyObject *capsule) {
    void *p = PyCapsule_GetPointer(capsule, "chargingd.fraud._local.ops");
    if (p == NULL) {
        PyErr_Clear();
        return;
    }
    cops *ops = (cops *)p;
    for (Py_ssize_t i = 0; i < ops->n; i++) {
        PyMem_Free(ops->ops[i].slot);
        PyMem_Free(ops->ops[i].pre);
    }
    PyMem_Free(ops);
}

static char *copy_bytes(PyObject *b, size_t *n) {
    char *s;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(b, &s, &len) < 0)
        return NULL;
    char *out = (char *)PyMem_Malloc((size_t)len + 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, s, (size_t)len);
    *n = (size_t)len;
    return out;
}

static int as_i64(PyObject *o, int64_t *out) {
    /* (PyLong_AsLongLong reads an int of two digits or more, a time in ms, through
       _PyLong_AsByteArray: ~145 instructions a call where this takes ~40) */
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow != 0 || v > BIG || v < -BIG) {
        PyErr_SetString(PyExc_OverflowError, "beyond 2**52");
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* compile_ops(ops): ops a sequence of (kind, on_ip, slot bytes, pre bytes, win, width,
   limit, rank, extra, counts) as local.py's Op has them; a capsule for evaluate. */
static PyObject *compile_ops(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "ops: a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_OPS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many ops");
        return NULL;
    }
    cops *ops = (cops *)PyMem_Calloc(1, sizeof(cops) + (size_t)n * sizeof(cop));
    if (ops == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    PyObject *capsule = PyCapsule_New(ops, "chargingd.fraud._local.ops", ops_free);
    if (capsule == NULL) {
        PyMem_Free(ops);
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 10) {
            PyErr_SetString(PyExc_ValueError, "an op: a tuple of 10");
            goto fail;
        }
        cop *op = &ops->ops[i];
        int64_t v[10];
        for (int k = 0; k < 10; k++) {
            if (k == 2 || k == 3)
                continue;
            if (as_i64(PyTuple_GET_ITEM(t, k), &v[k]) < 0)
                goto fail;
        }
        op->kind = (int32_t)v[0];
        op->on_ip = (int32_t)v[1];
        op->slot = copy_bytes(PyTuple_GET_ITEM(t, 2), &op->slot_n);
        if (op->slot == NULL)
            goto fail;
        op->pre = copy_bytes(PyTuple_GET_ITEM(t, 3), &op->pre_n);
        if (op->pre == NULL)
            goto fail;
        op->win = v[4];
        op->width = v[5];
        op->limit = v[6];
        op->rank = (int32_t)v[7];
        op->extra = v[8];
        op->counts = (int32_t)v[9];
        ops->n = i + 1;
    }
    Py_DECREF(seq);
    return capsule;
fail:
    Py_DECREF(seq);
    Py_DECREF(capsule);
    return NULL;
}

static wbuf out_buf;

/* local.py unpack: the value's tree (b"" -> {w: {}}); BAIL when it is not one this
   module reads exactly (Python then decodes it, and raises where unpackb raises). */
static int load(arena *a, const char *raw, Py_ssize_t n, node *out) {
    if (n == 0) {
        *out = map_node();
    } else {
        reader r = {(const unsigned char *)raw, (const unsigned char *)raw + n, a};
        if (parse(&r, out, 0) < 0 || r.p != r.end || a->failed)
            return BAIL;
        if (out->t != T_MAP)
            *out = map_node();
    }
    node *w = mget(out, "w", 1);
    if (w == NULL || w->t != T_MAP) {
        if (mset(a, out, "w", 1, map_node()) == NULL)
            return BAIL;
    }
    return 0;
}

static PyObject *packed(const node *v) {
    out_buf.n = 0;
    out_buf.failed = 0;
    pack(&out_buf, v);
    if (out_buf.failed)
        return PyErr_NoMemory();
    return PyBytes_FromStringAndSize(out_buf.p, (Py_ssize_t)out_buf.n);
}

static const char *utf8(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "a str");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(s, n);
}

static PyObject *run(const cops *ops, node *v, node *ipv, int own_ip, const call_t *call,
                     int64_t ttl, int64_t ip_ttl, arena *a) {
    int s = seen(v, call);
    if (s != 0)
        return PyLong_FromLong(s < 0 ? -1 : 0);
    int64_t fired[2 * MAX_OPS];
    int nf = 0, worst = -1, worst_i = 0, dirty = 0, ip_dirty = 0;
    for (Py_ssize_t i = 0; i < ops->n; i++) {
        const cop *op = &ops->ops[i];
        int64_t count = count_op(a, op, op->on_ip ? ipv : v, v, call);
        if (count < 0 || a->failed)
            return PyLong_FromLong(-1);
        if (op->counts) {
            if (op->on_ip && own_ip)
                ip_dirty = 1;
            else
                dirty = 1;
        }
        if (op->rank >= 0 && count > op->limit) {
            fired[nf++] = i + 1;
            fired[nf++] = count;
            if (op->rank > worst) {
                worst = op->rank;
                worst_i = (int)i + 1;
            }
        }
    }
    if (worst >= 2)
        return PyLong_FromLong(1);
    int d = admit(a, ops, v, call);
    if (d < 0 || a->failed)
        return PyLong_FromLong(-1);
    dirty = dirty || d;
    int64_t ip_px = 0, px = 0;
    if (own_ip && ip_dirty) {
        if (prune(a, ipv, call->now) < 0 || (ip_px = expiry(a, ipv, call->now, ip_ttl)) < 0)
            return PyLong_FromLong(-1);
    }
    if (dirty) {
        if (prune(a, v, call->now) < 0 || (px = expiry(a, v, call->now, ttl)) < 0)
            return PyLong_FromLong(-1);
    }
    if (a->failed)
        return PyLong_FromLong(-1);
    PyObject *ft = PyTuple_New(nf);
    if (ft == NULL)
        return NULL;
    for (int i = 0; i < nf; i++) {
        PyObject *x = PyLong_FromLongLong(fired[i]);
        if (x == NULL) {
            Py_DECREF(ft);
            return NULL;
        }
        PyTuple_SET_ITEM(ft, i, x);
    }
    PyObject *value = Py_None, *ip_value = Py_None;
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    if (own_ip && ip_dirty) {
        Py_DECREF(ip_value);
        ip_value = packed(ipv);
    }
    if (dirty && ip_value != NULL) {
        Py_DECREF(value);
        value = packed(v);
    }
    if (value == NULL || ip_value == NULL) {
        Py_XDECREF(value);
        Py_XDECREF(ip_value);
        Py_DECREF(ft);
        return NULL;
    }
    /* (the tuple built directly: Py_BuildValue's format parse cost ~940 instructions) */
    PyObject *out = PyTuple_New(6), *wi = PyLong_FromLong(worst_i);
    PyObject *px_o = PyLong_FromLongLong((long long)px);
    PyObject *ip_px_o = PyLong_FromLongLong((long long)ip_px);
    if (out == NULL || wi == NULL || px_o == NULL || ip_px_o == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(wi);
        Py_XDECREF(px_o);
        Py_XDECREF(ip_px_o);
        Py_DECREF(ft);
        Py_DECREF(value);
        Py_DECREF(ip_value);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, wi);
    PyTuple_SET_ITEM(out, 1, ft);
    PyTuple_SET_ITEM(out, 2, value);
    PyTuple_SET_ITEM(out, 3, px_o);
    PyTuple_SET_ITEM(out, 4, ip_value);
    PyTuple_SET_ITEM(out, 5, ip_px_o);
    return out;
}

static PyObject *evaluate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "evaluate: 11 arguments");
        return NULL;
    }
    cops *ops = (cops *)PyCapsule_GetPointer(args[0], "chargingd.fraud._local.ops");
    if (ops == NULL)
        return NULL;
    if (!PyBytes_Check(args[1]) || (args[2] != Py_None && !PyBytes_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "the values: bytes");
        return NULL;
    }
    call_t call;
    int64_t ttl, ip_ttl;
    if (as_i64(args[3], &call.now) < 0 || as_i64(args[8], &call.number_hash) < 0 ||
        as_i64(args[9], &ttl) < 0 || as_i64(args[10], &ip_ttl) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        return PyLong_FromLong(-1);
    }
    if ((call.identity = utf8(args[4], &call.identity_n)) == NULL ||
        (call.sid = utf8(args[5], &call.sid_n)) == NULL ||
        (call.number = utf8(args[6], &call.number_n)) == NULL ||
        (call.country = utf8(args[7], &call.country_n)) == NULL) {
        /* not UTF-8 (a lone surrogate): local.py encodes the number and the country only
           for a call not seen, so it raises or answers as it does there */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return NULL;
        PyErr_Clear();
        return PyLong_FromLong(-1);
    }
    /* The arena and the packing buffer are this module's: a call made while one runs
       (a finalizer run by a collection that a new tuple started, in theory) declines. */
    static int busy = 0;
    if (busy)
        return PyLong_FromLong(-1);
    busy = 1;
    arena a;
    arena_start(&a);
    node v, ipv_own;
    node *ipv = &v;
    int own_ip = args[2] != Py_None;
    PyObject *out;
    if (load(&a, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), &v) < 0 ||
        (own_ip && load(&a, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]), &ipv_own) < 0)) {
        out = PyLong_FromLong(-1);
    } else {
        if (own_ip)
            ipv = &ipv_own;
        out = run(ops, &v, ipv, own_ip, &call, ttl, ip_ttl, &a);
    }
    arena_end(&a);
    busy = 0;
    return out;
}

static PyMethodDef methods[] = {
    {"compile_ops", compile_ops, METH_O, "The ops of a rule set, for evaluate."},
    {"evaluate", (PyCFunction)(void (*)(void))evaluate, METH_FASTCALL,
     "A call's authorize ops on the stored values' bytes (see the module's text)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chargingd.fraud._local",
    "fraud/local.py's evaluation in C on the stored bytes (fraud/_local.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__local(void) { return PyModule_Create(&module); }
