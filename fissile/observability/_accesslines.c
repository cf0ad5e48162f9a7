/*
 * The access log's JSON lines, formatted in C: ``json_lines(records, offset, prefix)``
 * gives the bytes ``AccessLog.format_lines`` gives as text for the same records in the
 * "json" format (fissile/observability/access.py), byte for byte.
 *
 * Why by hand: formatting a record in Python cost ~1.9 us (timeit, quiet machine) and
 * 5-8 us of a writer process's CPU per request under wrk, the largest part of what
 * the access log cost the machine; msgspec (2.3 us) and a vectorised Python formatter
 * (1.9 us) were no faster, their per-record conversions being the cost. Here: ~0.2 us.
 *
 * Only borrowed references are read; the one object made is the result. A record of
 * an unexpected shape raises TypeError (the caller then formats the batch in Python).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int
buffer_reserve(Buffer *buffer, Py_ssize_t more)
{
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity ? buffer->capacity : 4096;
    while (capacity < buffer->size + more) {
        capacity *= 2;
    }
    char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int
buffer_add(Buffer *buffer, const char *text, Py_ssize_t size)
{
    if (buffer_reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->size, text, (size_t)size);
    buffer->size += size;
    return 0;
}

#define ADD_LITERAL(buffer, literal) buffer_add((buffer), (literal), sizeof(literal) - 1)

static const char HEX[] = "0123456789abcdef";

/* ``value`` in decimal, at least ``width`` digits (zero-padded): snprintf cost ~80 ns a
 * call, five calls a record. */
static int
add_decimal(Buffer *buffer, unsigned long long value, int width)
{
    char digits[24];
    int size = 0;
    do {
        digits[sizeof(digits) - 1 - size++] = (char)('0' + value % 10);
        value /= 10;
    } while (value || size < width);
    return buffer_add(buffer, digits + sizeof(digits) - size, size);
}

static int
add_hex(Buffer *buffer, unsigned long long value, int width)
{
    char digits[24];
    int size = 0;
    do {
        digits[sizeof(digits) - 1 - size++] = HEX[value & 0xf];
        value >>= 4;
    } while (value || size < width);
    return buffer_add(buffer, digits + sizeof(digits) - size, size);
}

/* As json.encoder.encode_basestring_ascii: quoted, ASCII only. */
static int
add_quoted(Buffer *buffer, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "access record: a name that is not a str");
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* At most 12 bytes a character (a surrogate pair), and the quotes. */
    if (buffer_reserve(buffer, length * 12 + 2) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '\\': *out++ = '\\'; continue;
        case '"': *out++ = '"'; continue;
        case '\b': *out++ = 'b'; continue;
        case '\f': *out++ = 'f'; continue;
        case '\n': *out++ = 'n'; continue;
        case '\r': *out++ = 'r'; continue;
        case '\t': *out++ = 't'; continue;
        default: break;
        }
        if (c >= 0x10000) {
            Py_UCS4 v = c - 0x10000;
            Py_UCS4 high = 0xd800 | ((v >> 10) & 0x3ff);
            *out++ = 'u';
            *out++ = HEX[(high >> 12) & 0xf];
            *out++ = HEX[(high >> 8) & 0xf];
            *out++ = HEX[(high >> 4) & 0xf];
            *out++ = HEX[high & 0xf];
            *out++ = '\\';
            c = 0xdc00 | (v & 0x3ff);
        }
        *out++ = 'u';
        *out++ = HEX[(c >> 12) & 0xf];
        *out++ = HEX[(c >> 8) & 0xf];
        *out++ = HEX[(c >> 4) & 0xf];
        *out++ = HEX[c & 0xf];
    }
    *out++ = '"';
    buffer->size = out - buffer->data;
    return 0;
}

static int
add_quoted_or_null(Buffer *buffer, PyObject *text)
{
    if (text == Py_None) {
        return ADD_LITERAL(buffer, "null");
    }
    return add_quoted(buffer, text);
}

static int
add_long(Buffer *buffer, PyObject *number)
{
    if (!PyLong_Check(number)) {
        PyErr_SetString(PyExc_TypeError, "access record: a number that is not an int");
        return -1;
    }
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (overflow || (value == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        PyObject *text = PyObject_Str(number);
        if (text == NULL) {
            return -1;
        }
        Py_ssize_t size;
        const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
        int result = utf8 == NULL ? -1 : buffer_add(buffer, utf8, size);
        Py_DECREF(text);
        return result;
    }
    if (value < 0) {
        if (ADD_LITERAL(buffer, "-") < 0) {
            return -1;
        }
        return add_decimal(buffer, 0ULL - (unsigned long long)value, 1);
    }
    return add_decimal(buffer, (unsigned long long)value, 1);
}

/* As Python's "%.3f" % value: correctly rounded to three decimals. Milliseconds as an
 * integer count of thousandths, rounded half to even, where that is sure to give the same
 * digits (not within a thousandth of a tie, nor too large for a double's integers);
 * PyOS_double_to_string (~0.2 us) otherwise. */
static int
add_millis(Buffer *buffer, double value)
{
    double thousandths = value * 1000.0;
    if (value >= 0.0 && thousandths < 1099511627776.0) { /* 2**40 */
        double whole = floor(thousandths);
        double fraction = thousandths - whole;
        if (fabs(fraction - 0.5) > 0.001) {
            unsigned long long rounded = (unsigned long long)whole + (fraction > 0.5 ? 1 : 0);
            if (add_decimal(buffer, rounded / 1000, 1) < 0 || ADD_LITERAL(buffer, ".") < 0) {
                return -1;
            }
            return add_decimal(buffer, rounded % 1000, 3);
        }
    }
    char *text = PyOS_double_to_string(value, 'f', 3, 0, NULL);
    if (text == NULL) {
        return -1;
    }
    int result = buffer_add(buffer, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return result;
}

static int
add_seconds_as_millis(Buffer *buffer, PyObject *seconds)
{
    double value = PyFloat_AsDouble(seconds);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return add_millis(buffer, value * 1000.0);
}

/* Bytes the router made (a trace id, hex), quoted as their UTF-8 text. */
static int
add_quoted_bytes(Buffer *buffer, PyObject *bytes)
{
    const char *data = PyBytes_AS_STRING(bytes);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < ' ' || c > '~' || c == '\\' || c == '"') {
            PyObject *text = PyUnicode_DecodeUTF8(data, size, "strict");
            if (text == NULL) {
                return -1;
            }
            int result = add_quoted(buffer, text);
            Py_DECREF(text);
            return result;
        }
    }
    if (buffer_reserve(buffer, size + 2) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    *out++ = '"';
    memcpy(out, data, (size_t)size);
    out[size] = '"';
    buffer->size += size + 2;
    return 0;
}

/* An invocation id: a counter the router spells under the per-process prefix (``prefix``,
 * already escaped), or text it was given. */
static int
add_invocation(Buffer *buffer, PyObject *id, const char *prefix, Py_ssize_t prefix_size)
{
    if (id == Py_None) {
        return ADD_LITERAL(buffer, "null");
    }
    if (PyLong_Check(id)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(id, &overflow);
        if (overflow || value < 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "access record: an invocation counter out of range");
            return -1;
        }
        if (ADD_LITERAL(buffer, "\"") < 0 || buffer_add(buffer, prefix, prefix_size) < 0
            || add_hex(buffer, (unsigned long long)value, 8) < 0) {
            return -1;
        }
        return ADD_LITERAL(buffer, "\"");
    }
    return add_quoted(buffer, id);
}

static int
add_trace(Buffer *buffer, PyObject *trace)
{
    if (trace == Py_None) {
        return ADD_LITERAL(buffer, "null");
    }
    if (PyBytes_Check(trace)) {
        return add_quoted_bytes(buffer, trace);
    }
    return add_quoted(buffer, trace);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of ``wall`` seconds since the epoch, the milliseconds
 * truncated (as format_lines: int((wall - whole) * 1000)). The date and time to the second
 * are kept from the last record: records of a batch mostly share their second. */
typedef struct {
    long long second;
    char text[32];
    int size;
} Clock;

static int
add_time(Buffer *buffer, Clock *clock, double wall)
{
    double floored = floor(wall);
    if (!(floored >= 0.0 && floored < 253402300800.0)) { /* years 1970 to 9999 */
        PyErr_SetString(PyExc_ValueError, "access record: a time out of range");
        return -1;
    }
    long long whole = (long long)floored;
    if (whole != clock->second) {
        time_t seconds = (time_t)whole;
        struct tm utc;
        if (gmtime_r(&seconds, &utc) == NULL) {
            PyErr_SetString(PyExc_ValueError, "access record: a time out of range");
            return -1;
        }
        clock->size = (int)strftime(clock->text, sizeof(clock->text), "%Y-%m-%dT%H:%M:%S", &utc);
        clock->second = whole;
    }
    int millis = (int)((wall - floored) * 1000);
    if (buffer_add(buffer, clock->text, clock->size) < 0 || ADD_LITERAL(buffer, ".") < 0
        || add_decimal(buffer, (unsigned long long)millis, 3) < 0) {
        return -1;
    }
    return ADD_LITERAL(buffer, "Z");
}

static int
add_record(Buffer *buffer, Clock *clock, PyObject *record, double offset, const char *prefix,
           Py_ssize_t prefix_size)
{
    if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 10) {
        PyErr_SetString(PyExc_TypeError, "access record: not a tuple of 10 fields");
        return -1;
    }
    PyObject *endpoint = PyTuple_GET_ITEM(record, 1);
    if (!PyTuple_Check(endpoint) || PyTuple_GET_SIZE(endpoint) != 5) {
        PyErr_SetString(PyExc_TypeError, "access record: an endpoint that is not a 5-tuple");
        return -1;
    }
    double started = PyFloat_AsDouble(PyTuple_GET_ITEM(record, 0));
    if (started == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *size = PyTuple_GET_ITEM(record, 3);
    PyObject *queue = PyTuple_GET_ITEM(record, 5);
    int cold = PyObject_IsTrue(PyTuple_GET_ITEM(record, 7));
    if (cold < 0) {
        return -1;
    }
    if (ADD_LITERAL(buffer, "{\"time\":\"") < 0 || add_time(buffer, clock, started + offset) < 0
        || ADD_LITERAL(buffer, "\",\"function\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 0)) < 0
        || ADD_LITERAL(buffer, ",\"route\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 1)) < 0
        || ADD_LITERAL(buffer, ",\"method\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 2)) < 0
        || ADD_LITERAL(buffer, ",\"path\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 3)) < 0
        || ADD_LITERAL(buffer, ",\"status\":") < 0
        || add_long(buffer, PyTuple_GET_ITEM(record, 2)) < 0
        || ADD_LITERAL(buffer, ",\"bytes\":") < 0
        || (size == Py_None ? ADD_LITERAL(buffer, "null") : add_long(buffer, size)) < 0
        || ADD_LITERAL(buffer, ",\"duration_ms\":") < 0
        || add_seconds_as_millis(buffer, PyTuple_GET_ITEM(record, 4)) < 0
        || ADD_LITERAL(buffer, ",\"queue_ms\":") < 0
        || (queue == Py_None ? ADD_LITERAL(buffer, "null") : add_seconds_as_millis(buffer, queue))
               < 0
        || ADD_LITERAL(buffer, ",\"instance\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(record, 6)) < 0
        || (cold ? ADD_LITERAL(buffer, ",\"cold\":true") : ADD_LITERAL(buffer, ",\"cold\":false"))
               < 0
        || ADD_LITERAL(buffer, ",\"invocation_id\":") < 0
        || add_invocation(buffer, PyTuple_GET_ITEM(record, 8), prefix, prefix_size) < 0
        || ADD_LITERAL(buffer, ",\"trace_id\":") < 0
        || add_trace(buffer, PyTuple_GET_ITEM(record, 9)) < 0
        || ADD_LITERAL(buffer, ",\"client\":") < 0
        || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 4)) < 0
        || ADD_LITERAL(buffer, "}\n") < 0) {
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(json_lines_doc,
"json_lines(records, offset, prefix, /)\n--\n\n"
"The access log's records as JSON lines (bytes, ASCII), as AccessLog.format_lines spells\n"
"them in its json format: ``offset`` turns a record's monotonic time into wall time;\n"
"``prefix`` goes before an invocation counter's hex digits.");

static PyObject *
json_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "json_lines() takes records, offset and prefix");
        return NULL;
    }
    PyObject *records = PySequence_Fast(args[0], "json_lines(): records must be a sequence");
    if (records == NULL) {
        return NULL;
    }
    double offset = PyFloat_AsDouble(args[1]);
    if (offset == -1.0 && PyErr_Occurred()) {
        Py_DECREF(records);
        return NULL;
    }
    Buffer prefix = {NULL, 0, 0};
    Buffer buffer = {NULL, 0, 0};
    PyObject *result = NULL;
    /* The prefix, escaped once, without its quotes. */
    if (!PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "json_lines(): prefix must be a str");
        goto done;
    }
    if (add_quoted(&prefix, args[2]) < 0) {
        goto done;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    if (buffer_reserve(&buffer, count * 320 + 1) < 0) {
        goto done;
    }
    Clock clock = {-1, "", 0};
    for (Py_ssize_t i = 0; i < count; i++) {
        if (add_record(&buffer, &clock, items[i], offset, prefix.data + 1, prefix.size - 2)
            < 0) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(buffer.data ? buffer.data : "", buffer.size);
done:
    PyMem_Free(prefix.data);
    PyMem_Free(buffer.data);
    Py_DECREF(records);
    return result;
}

static PyMethodDef methods[] = {
    {"json_lines", (PyCFunction)(void (*)(void))json_lines, METH_FASTCALL, json_lines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fissile.observability._accesslines",
    .m_doc = "The access log's JSON lines, formatted in C (see json_lines).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__accesslines(void)
{
    return PyModuleDef_Init(&module);
}
