/* recvmmsg/sendmmsg for the RADIUS ports (radius/intake.py, UdpPort): many datagrams
 * per system call. Python's socket module has neither. Linux only; setup.py builds it
 * as an optional extension, and intake.py falls back to socket.recvmsg/sendto when it
 * is absent (or [radius] batch_syscalls = false).
 *
 * recv_batch(fd, count) -> [(data, address, stamp, truncated), ...]
 *     Up to `count` (<= MAX_BATCH) datagrams waiting on the non-blocking socket `fd`,
 *     one recvmmsg(MSG_DONTWAIT) call; [] when none waits. `data` holds at most
 *     MAX_DATAGRAM bytes, `truncated` says the datagram was longer (MSG_TRUNC);
 *     `address` is what socket.recvmsg gives: (host, port) for AF_INET,
 *     (host, port, flowinfo, scope_id) for AF_INET6; `stamp` the SO_TIMESTAMPNS arrival
 *     (epoch s, seconds + nanoseconds / 1e9) or +inf when the kernel gave none.
 *     An error of the socket (e.g. an ICMP error for an earlier reply) is OSError.
 * send_batch(fd, family, [(data, address), ...]) -> (sent, errno)
 *     Sends them with sendmmsg(MSG_DONTWAIT); a message the kernel refuses (an
 *     unreachable destination, a full buffer, an address that is no IP literal of
 *     `family`) is skipped and the rest are still sent. `errno`: that of the last
 *     refused message, 0 when all went.
 *
 * The GIL is held throughout: the calls never block, and the buffers are static.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_BATCH 64
#define MAX_DATAGRAM 4096 /* RFC 2865 §3: the largest RADIUS packet */
#define CONTROL_SIZE 64   /* CMSG_SPACE(sizeof(struct timespec)) is 32 */
#define ADDRESS_CACHE 8

static char recv_data[MAX_BATCH][MAX_DATAGRAM];
static char recv_control[MAX_BATCH][CONTROL_SIZE];
static struct sockaddr_storage recv_names[MAX_BATCH];

/* The address tuples of recent sources, by their raw sockaddr: a gateway sends from a
 * few sockets, so most datagrams reuse a tuple instead of building one. */
static struct {
    struct sockaddr_storage name;
    socklen_t length;
    PyObject *tuple;
} address_cache[ADDRESS_CACHE];
static int address_next;

static PyObject *
make_address(const struct sockaddr_storage *name, socklen_t length)
{
    char host[INET6_ADDRSTRLEN];
    PyObject *tuple;
    int i;

    for (i = 0; i < ADDRESS_CACHE; i++) {
        if (address_cache[i].tuple != NULL && address_cache[i].length == length
            && memcmp(&address_cache[i].name, name, length) == 0) {
            Py_INCREF(address_cache[i].tuple);
            return address_cache[i].tuple;
        }
    }
    if (name->ss_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)name;
        if (inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        tuple = Py_BuildValue("si", host, (int)ntohs(in4->sin_port));
    }
    else if (name->ss_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)name;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        tuple = Py_BuildValue("siII", host, (int)ntohs(in6->sin6_port),
                              (unsigned int)ntohl(in6->sin6_flowinfo),
                              (unsigned int)in6->sin6_scope_id);
    }
    else {
        Py_RETURN_NONE; /* no address (as socket.recvmsg gives); not cached */
    }
    if (tuple == NULL)
        return NULL;
    i = address_next;
    address_next = (address_next + 1) % ADDRESS_CACHE;
    Py_XDECREF(address_cache[i].tuple);
    memcpy(&address_cache[i].name, name, length);
    address_cache[i].length = length;
    Py_INCREF(tuple);
    address_cache[i].tuple = tuple;
    return tuple;
}

/* An int argument (_PyLong_AsInt is private and gone from 3.13's headers). */
static int
int_argument(PyObject *value, int *out)
{
    long number = PyLong_AsLong(value);
    if (number == -1 && PyErr_Occurred())
        return -1;
    if (number < INT_MIN || number > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "argument out of the range of an int");
        return -1;
    }
    *out = (int)number;
    return 0;
}

static double
arrival_stamp(const struct msghdr *header)
{
    struct cmsghdr *cmsg;
    struct timespec stamp;

    for (cmsg = CMSG_FIRSTHDR(header); cmsg != NULL;
         cmsg = CMSG_NXTHDR((struct msghdr *)header, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SO_TIMESTAMPNS
            && cmsg->cmsg_len >= CMSG_LEN(sizeof(stamp))) {
            memcpy(&stamp, CMSG_DATA(cmsg), sizeof(stamp));
            /* as intake._stamp: float(seconds + nanos / 1e9) */
            return (double)stamp.tv_sec + (double)stamp.tv_nsec / 1e9;
        }
    }
    return INFINITY;
}

static PyObject *
recv_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct mmsghdr messages[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    PyObject *batch, *item, *data, *address, *stamp;
    int fd, count, received, i;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_batch(fd, count)");
        return NULL;
    }
    if (int_argument(args[0], &fd) < 0)
        return NULL;
    if (int_argument(args[1], &count) < 0)
        return NULL;
    if (count < 1 || count > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "count must be 1..%d", MAX_BATCH);
        return NULL;
    }
    memset(messages, 0, sizeof(messages[0]) * count);
    for (i = 0; i < count; i++) {
        vectors[i].iov_base = recv_data[i];
        vectors[i].iov_len = MAX_DATAGRAM;
        messages[i].msg_hdr.msg_name = &recv_names[i];
        messages[i].msg_hdr.msg_namelen = sizeof(recv_names[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_control = recv_control[i];
        messages[i].msg_hdr.msg_controllen = CONTROL_SIZE;
    }
    do {
        received = recvmmsg(fd, messages, (unsigned int)count, MSG_DONTWAIT, NULL);
    } while (received < 0 && errno == EINTR);
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    batch = PyList_New(received);
    if (batch == NULL)
        return NULL;
    for (i = 0; i < received; i++) {
        const struct msghdr *header = &messages[i].msg_hdr;
        unsigned int length = messages[i].msg_len;
        if (length > MAX_DATAGRAM)
            length = MAX_DATAGRAM;
        data = PyBytes_FromStringAndSize(recv_data[i], (Py_ssize_t)length);
        address = data ? make_address(&recv_names[i], header->msg_namelen) : NULL;
        stamp = address ? PyFloat_FromDouble(arrival_stamp(header)) : NULL;
        item = stamp ? PyTuple_New(4) : NULL;
        if (item == NULL) {
            Py_XDECREF(data);
            Py_XDECREF(address);
            Py_XDECREF(stamp);
            Py_DECREF(batch);
            return NULL;
        }
        PyTuple_SET_ITEM(item, 0, data);
        PyTuple_SET_ITEM(item, 1, address);
        PyTuple_SET_ITEM(item, 2, stamp);
        PyTuple_SET_ITEM(item, 3, PyBool_FromLong(header->msg_flags & MSG_TRUNC));
        PyList_SET_ITEM(batch, i, item);
    }
    return batch;
}

/* `address` as a sockaddr of `family`; 0 when it is no (IP literal, port) of it. */
static socklen_t
parse_address(int family, PyObject *address, struct sockaddr_storage *name)
{
    PyObject *host;
    const char *text;
    long port, flowinfo = 0, scope_id = 0;
    Py_ssize_t size;

    if (!PyTuple_Check(address))
        return 0;
    size = PyTuple_GET_SIZE(address);
    if (size < 2 || size > (family == AF_INET6 ? 4 : 2))
        return 0;
    host = PyTuple_GET_ITEM(address, 0);
    if (!PyUnicode_Check(host) || !PyLong_Check(PyTuple_GET_ITEM(address, 1)))
        return 0;
    text = PyUnicode_AsUTF8(host);
    port = PyLong_AsLong(PyTuple_GET_ITEM(address, 1));
    if (size > 2)
        flowinfo = PyLong_AsLong(PyTuple_GET_ITEM(address, 2));
    if (size > 3)
        scope_id = PyLong_AsLong(PyTuple_GET_ITEM(address, 3));
    if (text == NULL || PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (port < 0 || port > 65535)
        return 0;
    memset(name, 0, sizeof(*name));
    if (family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)name;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, text, &in4->sin_addr) != 1)
            return 0;
        return sizeof(*in4);
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)name;
        if (flowinfo < 0 || flowinfo > 0xfffff || scope_id < 0 || scope_id > 0xffffffffL)
            return 0;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((unsigned short)port);
        in6->sin6_flowinfo = htonl((uint32_t)flowinfo);
        in6->sin6_scope_id = (uint32_t)scope_id;
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
            return 0;
        return sizeof(*in6);
    }
    return 0;
}

static PyObject *
send_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct mmsghdr messages[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    struct sockaddr_storage names[MAX_BATCH];
    PyObject *replies, *fast;
    Py_ssize_t total, offset;
    int fd, family, last_errno = 0;
    long sent = 0;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send_batch(fd, family, [(data, address), ...])");
        return NULL;
    }
    if (int_argument(args[0], &fd) < 0)
        return NULL;
    if (int_argument(args[1], &family) < 0)
        return NULL;
    replies = args[2];
    fast = PySequence_Fast(replies, "send_batch: a list of (data, address)");
    if (fast == NULL)
        return NULL;
    total = PySequence_Fast_GET_SIZE(fast);
    for (offset = 0; offset < total; offset += MAX_BATCH) {
        int chunk = (int)(total - offset < MAX_BATCH ? total - offset : MAX_BATCH);
        int ready = 0, at = 0, i;
        /* messages[ready] ... in order; a malformed entry is refused here (EINVAL) */
        for (i = 0; i < chunk; i++) {
            PyObject *reply = PySequence_Fast_GET_ITEM(fast, offset + i);
            char *buffer;
            Py_ssize_t length;
            socklen_t namelen;
            if (!PyTuple_Check(reply) || PyTuple_GET_SIZE(reply) != 2
                || !PyBytes_Check(PyTuple_GET_ITEM(reply, 0))) {
                last_errno = EINVAL;
                continue;
            }
            namelen = parse_address(family, PyTuple_GET_ITEM(reply, 1), &names[ready]);
            if (namelen == 0) {
                last_errno = EINVAL;
                continue;
            }
            PyBytes_AsStringAndSize(PyTuple_GET_ITEM(reply, 0), &buffer, &length);
            vectors[ready].iov_base = buffer;
            vectors[ready].iov_len = (size_t)length;
            memset(&messages[ready], 0, sizeof(messages[ready]));
            messages[ready].msg_hdr.msg_name = &names[ready];
            messages[ready].msg_hdr.msg_namelen = namelen;
            messages[ready].msg_hdr.msg_iov = &vectors[ready];
            messages[ready].msg_hdr.msg_iovlen = 1;
            ready++;
        }
        while (at < ready) {
            int went = sendmmsg(fd, messages + at, (unsigned int)(ready - at), MSG_DONTWAIT);
            if (went < 0) {
                if (errno == EINTR)
                    continue;
                last_errno = errno; /* this one is refused: skip it, send the rest */
                at++;
                continue;
            }
            sent += went;
            at += went;
        }
    }
    Py_DECREF(fast);
    return Py_BuildValue("li", sent, last_errno);
}

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(fd, count) -> [(data, address, stamp, truncated), ...]"},
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL,
     "send_batch(fd, family, [(data, address), ...]) -> (sent, errno)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chargingd.radius._mmsg",
    "recvmmsg/sendmmsg for the RADIUS ports (radius/intake.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0
        || PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
