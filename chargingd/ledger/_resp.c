/* A batch of Redis commands packed as RESP in one pass (ledger/thin.py's pack_batch).
 *
 * pack_batch(batch) -> bytes | None. ``batch``: a list of (command, future, retry)
 * entries, each command a tuple of 1-63 arguments. Packed as hiredis.pack_command packs
 * them ("*N\r\n", then "$LEN\r\n" VALUE "\r\n" per argument) when every argument is
 * exactly bytes, an ASCII str or an int that fits in 64 bits; None for any other batch
 * (a non-ASCII str, a big int, another type, no argument, 64+), which thin.py packs
 * itself (the same bytes, or hiredis's error). No Python code runs here: no callback,
 * no __index__ or __str__ (exact types only).
 *
 * Plain C (not mypyc), built in both of the Makefile's modes like radius/_mmsg.c
 * (setup.py; optional: without it thin.py packs the batch in parts, round 12a). Python's
 * own path cost ~12,000 instructions per authorize and ~21,000 per accounting packet
 * (a list append and a join item per header and per value, round 12a).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
} Out;

static int reserve(Out *out, Py_ssize_t more)
{
    if (out->len + more <= out->cap)
        return 1;
    Py_ssize_t cap = out->cap;
    while (cap < out->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2)
            return 0;
        cap *= 2;
    }
    char *buf = PyMem_Realloc(out->buf, (size_t)cap);
    if (buf == NULL)
        return 0;
    out->buf = buf;
    out->cap = cap;
    return 1;
}

/* The decimal digits of ``value`` (a '-' first when negative), as str(int) writes them. */
static Py_ssize_t decimal(char *to, long long value)
{
    char reversed[24];
    int n = 0;
    unsigned long long magnitude =
        value < 0 ? (unsigned long long)(-(value + 1)) + 1u : (unsigned long long)value;
    do {
        reversed[n++] = (char)('0' + (int)(magnitude % 10u));
        magnitude /= 10u;
    } while (magnitude != 0u);
    Py_ssize_t k = 0;
    if (value < 0)
        to[k++] = '-';
    while (n > 0)
        to[k++] = reversed[--n];
    return k;
}

/* "<lead><count>\r\n" */
static int header(Out *out, char lead, Py_ssize_t count)
{
    if (!reserve(out, 24))
        return 0;
    char *to = out->buf + out->len;
    Py_ssize_t k = 0;
    to[k++] = lead;
    k += decimal(to + k, (long long)count);
    to[k++] = '\r';
    to[k++] = '\n';
    out->len += k;
    return 1;
}

/* Append one argument; 0: not packed here (the caller falls back), -1: out of memory. */
static int argument(Out *out, PyObject *arg)
{
    const char *data;
    Py_ssize_t size;
    char digits[24];
    if (PyBytes_CheckExact(arg)) {
        data = PyBytes_AS_STRING(arg);
        size = PyBytes_GET_SIZE(arg);
    }
    else if (PyUnicode_CheckExact(arg)) {
        if (PyUnicode_READY(arg) < 0) {
            PyErr_Clear();
            return 0;
        }
        if (!PyUnicode_IS_ASCII(arg))
            return 0; /* its UTF-8 (or its error) thin.py's */
        data = (const char *)PyUnicode_DATA(arg);
        size = PyUnicode_GET_LENGTH(arg);
    }
    else if (PyLong_CheckExact(arg)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(arg, &overflow);
        if (overflow != 0 || (value == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        size = decimal(digits, value);
        data = digits;
    }
    else {
        return 0;
    }
    if (!header(out, '$', size) || !reserve(out, size + 2))
        return -1;
    memcpy(out->buf + out->len, data, (size_t)size);
    out->len += size;
    out->buf[out->len++] = '\r';
    out->buf[out->len++] = '\n';
    return 1;
}

static PyObject *pack_batch(PyObject *self, PyObject *batch)
{
    (void)self;
    if (!PyList_CheckExact(batch))
        Py_RETURN_NONE;
    Out out = {PyMem_Malloc(2048), 0, 2048};
    if (out.buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t entries = PyList_GET_SIZE(batch);
    for (Py_ssize_t i = 0; i < entries; i++) {
        PyObject *entry = PyList_GET_ITEM(batch, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 1)
            goto other;
        PyObject *command = PyTuple_GET_ITEM(entry, 0);
        if (!PyTuple_CheckExact(command))
            goto other;
        Py_ssize_t count = PyTuple_GET_SIZE(command);
        if (count < 1 || count > 63)
            goto other;
        if (!header(&out, '*', count))
            goto nomem;
        for (Py_ssize_t j = 0; j < count; j++) {
            int done = argument(&out, PyTuple_GET_ITEM(command, j));
            if (done == 0)
                goto other;
            if (done < 0)
                goto nomem;
        }
    }
    PyObject *packed = PyBytes_FromStringAndSize(out.buf, out.len);
    PyMem_Free(out.buf);
    return packed;
other:
    PyMem_Free(out.buf);
    Py_RETURN_NONE;
nomem:
    PyMem_Free(out.buf);
    return PyErr_NoMemory();
}

static PyMethodDef methods[] = {
    {"pack_batch", pack_batch, METH_O,
     "pack_batch(batch) -> bytes | None: the batch's commands as RESP (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_resp", "RESP packing of a command batch (ledger/thin.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__resp(void)
{
    return PyModule_Create(&module);
}
