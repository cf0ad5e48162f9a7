/*
 * The access log's records (fissile/observability/access.py's ``Record``), in C:
 *
 * - ``json_lines(records, offset, prefix)`` gives the bytes ``AccessLog.format_lines``
 *   gives as text for the same records in the "json" format, byte for byte;
 * - ``tally(records, bounds)`` counts them by function as ``FunctionMetrics.answered``
 *   does (statuses, the duration and queue-wait histograms, cold starts);
 * - ``functions(records)``: the distinct functions they are to, in order;
 * - ``bind(Record)``: where a ``Record``'s fields are (its slots), read once;
 * - ``Journal``: the router's log as it goes, each record added formatted (as ``json_lines``
 *   would), counted (as ``tally`` would) and its line kept among its function's last, while
 *   the record is still in the CPU's caches; its lines taken in batches, without a copy.
 *
 * A record is a ``Record`` (the router's ``Trip``: its slots read where they are, found by
 * ``bind``) or a tuple of its fields in the same order (``RecordFields``: the writer
 * process's, marshalled).
 *
 * Why by hand: formatting a record in Python cost ~1.9 us (timeit, quiet machine) and
 * 5-8 us of a writer process's CPU per request under wrk, the largest part of what
 * the access log cost the machine; msgspec (2.3 us) and a vectorised Python formatter
 * (1.9 us) were no faster, their per-record conversions being the cost. Here: ~0.2 us.
 * Counting a record in Python's C-level loops (map, Counter, bisect) cost ~1.5k
 * instructions, most of it comparing floats as objects; here ~0.1k (callgrind).
 *
 * Only borrowed references are read, and no Python code runs while the records are (exact
 * floats, ints and bools only: no __float__ or __bool__ to call); the one object made is the
 * result. A record of another shape raises TypeError (the caller then formats the batch in
 * Python).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* Bytes being written: in a bytes object that becomes the result (``bytes`` set: no copy
 * at the end, ~300 instructions a record), or in memory of PyMem's. */
typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    PyObject *bytes;
} Buffer;

/* -- records ------------------------------------------------------------------------ */

/* A record's fields, in ``Record.__slots__``'s order (and a ``RecordFields`` tuple's). */
enum {
    F_STARTED,
    F_ENDPOINT,
    F_STATUS,
    F_SIZE,
    F_DURATION,
    F_WAITED,
    F_INSTANCE,
    F_COLD,
    F_INVOCATION,
    F_TRACE,
    FIELD_COUNT
};

static const char *const FIELD_NAMES[FIELD_COUNT] = {
    "started", "endpoint", "status", "size", "duration",
    "waited", "instance", "cold", "invocation", "trace",
};

/* The Record class (a strong reference, NULL until ``bind``) and where each field's slot is
 * in its instances (and its subclasses': a subclass's slots come after its base's). */
static PyTypeObject *record_type = NULL;
static Py_ssize_t field_offsets[FIELD_COUNT];
/* The last subclass seen (a strong reference: the router's Trip), recognised without
 * PyType_IsSubtype's walk of its bases (~60 instructions a record, callgrind). */
static PyTypeObject *record_subtype = NULL;

/* Whether ``record`` is a Record (of the bound class or a subclass of it). */
static inline int
is_record(PyObject *record)
{
    PyTypeObject *type = Py_TYPE(record);
    if (type == record_type || type == record_subtype) {
        return record_type != NULL;
    }
    if (record_type == NULL || !PyType_IsSubtype(type, record_type)) {
        return 0;
    }
    Py_INCREF(type);
    Py_XSETREF(record_subtype, type);
    return 1;
}

/* ``record``'s fields, borrowed, into ``fields``; -1 with TypeError for another shape, or a
 * Record with a field not set. */
static int
record_fields(PyObject *record, PyObject **fields)
{
    if (is_record(record)) {
        for (int i = 0; i < FIELD_COUNT; i++) {
            PyObject *value = *(PyObject **)((char *)record + field_offsets[i]);
            if (value == NULL) {
                PyErr_Format(PyExc_TypeError, "access record: its %s is not set",
                             FIELD_NAMES[i]);
                return -1;
            }
            fields[i] = value;
        }
        return 0;
    }
    if (PyTuple_Check(record) && PyTuple_GET_SIZE(record) == FIELD_COUNT) {
        for (int i = 0; i < FIELD_COUNT; i++) {
            fields[i] = PyTuple_GET_ITEM(record, i);
        }
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "access record: not a Record or a tuple of 10 fields");
    return -1;
}

PyDoc_STRVAR(bind_doc,
"bind(record_type, /)\n--\n\n"
"Where ``record_type``'s fields are: each must be a slot of it (a member descriptor of an\n"
"object), named as the fields are. Its instances (and its subclasses') are records from\n"
"then on.");

static PyObject *
bind(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "bind() takes a class");
        return NULL;
    }
    Py_ssize_t offsets[FIELD_COUNT];
    for (int i = 0; i < FIELD_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(type, FIELD_NAMES[i]);
        if (descr == NULL) {
            return NULL;
        }
        int usable = Py_IS_TYPE(descr, &PyMemberDescr_Type)
                     && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
                     && PyType_IsSubtype((PyTypeObject *)type,
                                         ((PyDescrObject *)descr)->d_type);
        if (usable) {
            offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        }
        Py_DECREF(descr);
        if (!usable) {
            PyErr_Format(PyExc_TypeError, "bind(): %s is not a slot of the class",
                         FIELD_NAMES[i]);
            return NULL;
        }
    }
    memcpy(field_offsets, offsets, sizeof(offsets));
    Py_INCREF(type);
    Py_XSETREF(record_type, (PyTypeObject *)type);
    Py_CLEAR(record_subtype); /* of the class bound before, if any */
    Py_RETURN_NONE;
}

/* Grows the buffer: the slow path of buffer_reserve, out of line. */
static int
buffer_grow(Buffer *buffer, Py_ssize_t more)
{
    Py_ssize_t capacity = buffer->capacity ? buffer->capacity : 4096;
    while (capacity < buffer->size + more) {
        capacity *= 2;
    }
    if (buffer->bytes != NULL) {
        if (_PyBytes_Resize(&buffer->bytes, capacity) < 0) {
            buffer->data = NULL; /* the object is gone (and the error set) */
            return -1;
        }
        buffer->data = PyBytes_AS_STRING(buffer->bytes);
    }
    else {
        char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        buffer->data = data;
    }
    buffer->capacity = capacity;
    return 0;
}

/* Inline, as buffer_add: a record is ~25 appends, mostly literals of a known size that the
 * compiler then copies with a move or two. Called, they cost ~1.1k instructions a record
 * (buffer_add ~680 and memcpy ~400, callgrind), about a sixth of what the access log and
 * metrics cost a request. */
static inline int
buffer_reserve(Buffer *buffer, Py_ssize_t more)
{
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    return buffer_grow(buffer, more);
}

static inline int
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

/* The bytes a JSON string holds as they are (printable ASCII but the quote and backslash):
 * one look-up a byte (filled by the module's init). */
static unsigned char PLAIN[256];

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

/* ``value`` (below 1000) as three digits: the milliseconds of times and durations. */
static inline int
add_three_digits(Buffer *buffer, unsigned int value)
{
    if (buffer_reserve(buffer, 3) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    out[0] = (char)('0' + value / 100);
    out[1] = (char)('0' + value / 10 % 10);
    out[2] = (char)('0' + value % 10);
    buffer->size += 3;
    return 0;
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
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        /* Names, paths and ids are ASCII with nothing to escape, mostly: copied whole. */
        const unsigned char *ascii = PyUnicode_DATA(text);
        Py_ssize_t i = 0;
        while (i < length && PLAIN[ascii[i]]) {
            i++;
        }
        if (i == length) {
            if (buffer_reserve(buffer, length + 2) < 0) {
                return -1;
            }
            char *out = buffer->data + buffer->size;
            out[0] = '"';
            memcpy(out + 1, ascii, (size_t)length);
            out[length + 1] = '"';
            buffer->size += length + 2;
            return 0;
        }
    }
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
    if (!PyLong_CheckExact(number)) {
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
            return add_three_digits(buffer, (unsigned int)(rounded % 1000));
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
    if (!PyFloat_CheckExact(seconds)) {
        PyErr_SetString(PyExc_TypeError, "access record: a duration that is not a float");
        return -1;
    }
    return add_millis(buffer, PyFloat_AS_DOUBLE(seconds) * 1000.0);
}

/* Bytes the router made (a trace id, hex), quoted as their UTF-8 text. */
static int
add_quoted_bytes(Buffer *buffer, PyObject *bytes)
{
    const char *data = PyBytes_AS_STRING(bytes);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!PLAIN[(unsigned char)data[i]]) {
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
    if (PyLong_CheckExact(id)) {
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

/* What was spelt of an endpoint: its function, route, method, path, status and bytes
 * (``shared``), and its client, each as it appears in a line. Requests to an endpoint repeat
 * it, and mostly their status and size: those parts are copied, not spelt again. Each record
 * has an endpoint tuple of its own (the router makes one per request: comparing it with the
 * connection's last one in Python cost ~0.4k instructions a request, here ~0.1k), so
 * endpoints are compared by content: with the last record's first (wrk's 32 connections to
 * one path), then in a table by their hash. The text is the entry's own (a Journal keeps
 * its table from one record to the next, its lines handed on meanwhile). */
typedef struct {
    PyObject *endpoint; /* a strong reference; NULL: a free entry, or one being filled */
    Py_hash_t hash;
    long long status;
    long long size; /* -1: None */
    int numbers; /* 0: status or size out of long long's range, never matched */
    Buffer shared;
    Buffer client;
} Spelt;

#define SPELT_SLOTS 64

/* Equal names: mostly the same object (a function's, a route's, a method's), else equal
 * str (a connection's client, a path decoded anew per request). Equal str have the same
 * kind (CPython keeps each in its narrowest). */
static inline int
same_text(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)) {
        return 0;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return length == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b)
           && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)length * (size_t)kind) == 0;
}

/* Two endpoints (5-tuples) of the same function, route, method, path and client. */
static int
same_endpoint(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    for (Py_ssize_t i = 0; i < 5; i++) {
        if (!same_text(PyTuple_GET_ITEM(a, i), PyTuple_GET_ITEM(b, i))) {
            return 0;
        }
    }
    return 1;
}

/* An endpoint's items are str or None: hashed without running any Python code (a str's
 * hash is computed once and kept in it). -1 with TypeError for another item. */
static Py_hash_t
endpoint_hash(PyObject *endpoint)
{
    Py_uhash_t hash = 0;
    for (Py_ssize_t i = 0; i < 5; i++) {
        PyObject *name = PyTuple_GET_ITEM(endpoint, i);
        Py_hash_t item = 0;
        if (PyUnicode_CheckExact(name)) {
            item = PyObject_Hash(name);
        }
        else if (name != Py_None) {
            PyErr_SetString(PyExc_TypeError, "access record: a name that is not a str");
            return -1;
        }
        if (item == -1) {
            return -1;
        }
        hash = hash * 1000003U ^ (Py_uhash_t)item;
    }
    return (Py_hash_t)(hash == (Py_uhash_t)-1 ? 1 : hash);
}

/* ``endpoint``'s entry: ``*found`` 1 when it holds what was spelt of an equal endpoint,
 * else 0 (a free entry, or one this endpoint takes over, emptied, to be filled); NULL on an
 * error (an item that is not a str or None). */
static Spelt *
spelt_find(Spelt *table, Spelt *last, PyObject *endpoint, int *found)
{
    if (last != NULL && last->endpoint != NULL && same_endpoint(last->endpoint, endpoint)) {
        *found = 1;
        return last;
    }
    Py_hash_t hash = endpoint_hash(endpoint);
    if (hash == -1) {
        return NULL;
    }
    size_t slot = (size_t)hash % SPELT_SLOTS;
    *found = 0;
    for (int probe = 0; probe < 8; probe++) {
        Spelt *entry = &table[(slot + (size_t)probe) % SPELT_SLOTS];
        if (entry->endpoint == NULL) {
            entry->hash = hash;
            return entry;
        }
        if (entry->hash == hash && same_endpoint(entry->endpoint, endpoint)) {
            *found = 1;
            return entry;
        }
    }
    Py_CLEAR(table[slot].endpoint); /* crowded: this endpoint takes the slot over */
    table[slot].hash = hash;
    return &table[slot];
}

static void
spelt_clear(Spelt *table)
{
    for (int i = 0; i < SPELT_SLOTS; i++) {
        Py_CLEAR(table[i].endpoint);
        PyMem_Free(table[i].shared.data);
        PyMem_Free(table[i].client.data);
    }
    memset(table, 0, sizeof(Spelt) * SPELT_SLOTS);
}

/* ``size`` bytes of ``buffer`` from ``start``, as ``copy``'s whole content. */
static int
keep_copy(Buffer *copy, const Buffer *buffer, Py_ssize_t start, Py_ssize_t size)
{
    copy->size = 0;
    return buffer_add(copy, buffer->data + start, size);
}

/* A number of the record, for comparing with what was spelt: 0 when it is not an int in
 * long long's range (``*value`` then unusable). */
static inline int
small_number(PyObject *number, long long *value)
{
    if (number == Py_None) {
        *value = -1;
        return 1;
    }
    if (!PyLong_CheckExact(number)) {
        return 0;
    }
    int overflow = 0;
    *value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (overflow || *value < 0) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

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
    if (millis > 999) {
        millis = 999; /* a wall time a hair below the next second, rounded up */
    }
    if (buffer_add(buffer, clock->text, clock->size) < 0 || ADD_LITERAL(buffer, ".") < 0
        || add_three_digits(buffer, (unsigned int)millis) < 0) {
        return -1;
    }
    return ADD_LITERAL(buffer, "Z");
}


/* What formatting lines keeps from one record to the next. */
typedef struct {
    Clock clock;
    Spelt table[SPELT_SLOTS];
    Spelt *last;
    double offset; /* a record's monotonic time + offset: its wall time */
    Buffer prefix; /* an invocation counter's, escaped, without quotes (data + 1) */
} Formatter;

static int
formatter_init(Formatter *formatter, PyObject *prefix, double offset)
{
    memset(formatter, 0, sizeof(Formatter));
    formatter->clock.second = -1;
    formatter->offset = offset;
    if (!PyUnicode_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "the invocation prefix must be a str");
        return -1;
    }
    return add_quoted(&formatter->prefix, prefix);
}

static void
formatter_clear(Formatter *formatter)
{
    spelt_clear(formatter->table);
    formatter->last = NULL;
    PyMem_Free(formatter->prefix.data);
    formatter->prefix.data = NULL;
}

/* One record's JSON line, appended to ``buffer``, from its ``fields`` (record_fields'). */
static int
add_line(Buffer *buffer, Formatter *formatter, PyObject **fields)
{
    PyObject *endpoint = fields[F_ENDPOINT];
    if (!PyTuple_Check(endpoint) || PyTuple_GET_SIZE(endpoint) != 5) {
        PyErr_SetString(PyExc_TypeError, "access record: an endpoint that is not a 5-tuple");
        return -1;
    }
    PyObject *arrival = fields[F_STARTED];
    PyObject *flag = fields[F_COLD];
    if (!PyFloat_CheckExact(arrival) || !PyBool_Check(flag)) {
        PyErr_SetString(PyExc_TypeError, "access record: a time or cold flag of another type");
        return -1;
    }
    double started = PyFloat_AS_DOUBLE(arrival);
    PyObject *size = fields[F_SIZE];
    PyObject *queue = fields[F_WAITED];
    int cold = flag == Py_True;
    PyObject *status = fields[F_STATUS];
    if (ADD_LITERAL(buffer, "{\"time\":\"") < 0
        || add_time(buffer, &formatter->clock, started + formatter->offset) < 0
        || ADD_LITERAL(buffer, "\",") < 0) {
        return -1;
    }
    int found;
    Spelt *spelt = spelt_find(formatter->table, formatter->last, endpoint, &found);
    if (spelt == NULL) {
        return -1;
    }
    formatter->last = spelt;
    long long status_value, size_value;
    int numbers = small_number(status, &status_value) && small_number(size, &size_value);
    if (found && numbers && spelt->numbers && spelt->status == status_value
        && spelt->size == size_value) {
        if (buffer_add(buffer, spelt->shared.data, spelt->shared.size) < 0) {
            return -1;
        }
    }
    else {
        Py_ssize_t start = buffer->size;
        if (ADD_LITERAL(buffer, "\"function\":") < 0
            || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 0)) < 0
            || ADD_LITERAL(buffer, ",\"route\":") < 0
            || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 1)) < 0
            || ADD_LITERAL(buffer, ",\"method\":") < 0
            || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 2)) < 0
            || ADD_LITERAL(buffer, ",\"path\":") < 0
            || add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 3)) < 0
            || ADD_LITERAL(buffer, ",\"status\":") < 0 || add_long(buffer, status) < 0
            || ADD_LITERAL(buffer, ",\"bytes\":") < 0
            || (size == Py_None ? ADD_LITERAL(buffer, "null") : add_long(buffer, size)) < 0) {
            if (!found) {
                Py_CLEAR(spelt->endpoint);
            }
            return -1;
        }
        if (keep_copy(&spelt->shared, buffer, start, buffer->size - start) < 0) {
            Py_CLEAR(spelt->endpoint); /* its text is not whole */
            formatter->last = NULL;
            return -1;
        }
        spelt->numbers = numbers;
        spelt->status = numbers ? status_value : 0;
        spelt->size = numbers ? size_value : 0;
    }
    if (ADD_LITERAL(buffer, ",\"duration_ms\":") < 0
        || add_seconds_as_millis(buffer, fields[F_DURATION]) < 0
        || ADD_LITERAL(buffer, ",\"queue_ms\":") < 0
        || (queue == Py_None ? ADD_LITERAL(buffer, "null") : add_seconds_as_millis(buffer, queue))
               < 0
        || ADD_LITERAL(buffer, ",\"instance\":") < 0
        || add_quoted_or_null(buffer, fields[F_INSTANCE]) < 0
        || (cold ? ADD_LITERAL(buffer, ",\"cold\":true") : ADD_LITERAL(buffer, ",\"cold\":false"))
               < 0
        || ADD_LITERAL(buffer, ",\"invocation_id\":") < 0
        || add_invocation(buffer, fields[F_INVOCATION], formatter->prefix.data + 1,
                          formatter->prefix.size - 2) < 0
        || ADD_LITERAL(buffer, ",\"trace_id\":") < 0
        || add_trace(buffer, fields[F_TRACE]) < 0
        || ADD_LITERAL(buffer, ",\"client\":") < 0) {
        if (!found) {
            Py_CLEAR(spelt->endpoint);
        }
        return -1;
    }
    if (found) {
        if (buffer_add(buffer, spelt->client.data, spelt->client.size) < 0) {
            return -1;
        }
    }
    else {
        Py_ssize_t start = buffer->size;
        if (add_quoted_or_null(buffer, PyTuple_GET_ITEM(endpoint, 4)) < 0
            || keep_copy(&spelt->client, buffer, start, buffer->size - start) < 0) {
            return -1;
        }
        /* Last: both parts of this endpoint are spelt now. */
        Py_INCREF(endpoint);
        Py_XSETREF(spelt->endpoint, endpoint);
    }
    return ADD_LITERAL(buffer, "}\n");
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
    double offset = PyFloat_AsDouble(args[1]);
    if (offset == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *records = PySequence_Fast(args[0], "json_lines(): records must be a sequence");
    if (records == NULL) {
        return NULL;
    }
    Buffer buffer = {NULL, 0, 0, NULL};
    PyObject *result = NULL;
    Formatter formatter;
    if (formatter_init(&formatter, args[2], offset) < 0) {
        goto done;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    buffer.capacity = count * 320 + 64;
    buffer.bytes = PyBytes_FromStringAndSize(NULL, buffer.capacity);
    if (buffer.bytes == NULL) {
        goto done;
    }
    buffer.data = PyBytes_AS_STRING(buffer.bytes);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *fields[FIELD_COUNT];
        if (record_fields(items[i], fields) < 0 || add_line(&buffer, &formatter, fields) < 0) {
            goto done;
        }
    }
    if (_PyBytes_Resize(&buffer.bytes, buffer.size) == 0) {
        result = buffer.bytes; /* its reference, handed on */
        buffer.bytes = NULL;
    }
done:
    formatter_clear(&formatter);
    Py_XDECREF(buffer.bytes);
    Py_DECREF(records);
    return result;
}

/* -- counting ------------------------------------------------------------------------ */

/* One function's counts of a chunk of records. */
typedef struct {
    PyObject *function; /* borrowed: a record's endpoint's first item, a str (None: none) */
    long long *statuses; /* pairs: status, requests */
    Py_ssize_t status_count;
    long long *durations; /* per bucket, the last one +Inf */
    double duration_sum;
    long long *waits;
    double wait_sum;
    long long wait_count;
    long long cold;
    long long requests;
} Tally;

/* As bisect.bisect_left on the bounds (a NaN, never less than a bound, lands first). */
static Py_ssize_t
bucket(const double *bounds, Py_ssize_t count, double value)
{
    Py_ssize_t low = 0, high = count;
    while (low < high) {
        Py_ssize_t middle = (low + high) / 2;
        if (bounds[middle] < value) {
            low = middle + 1;
        }
        else {
            high = middle;
        }
    }
    return low;
}

static void
tallies_free(Tally *tallies, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        PyMem_Free(tallies[i].statuses);
        PyMem_Free(tallies[i].durations);
        PyMem_Free(tallies[i].waits);
    }
    PyMem_Free(tallies);
}

static int
same_function(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)) {
        return 0;
    }
    return PyUnicode_Compare(a, b) == 0;
}

static PyObject *
counts_list(const long long *counts, Py_ssize_t size)
{
    PyObject *list = PyList_New(size);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *count = PyLong_FromLongLong(counts[i]);
        if (count == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, count);
    }
    return list;
}

/* One record's request into ``counted`` (its fields' types checked by the caller). */
static int
tally_add(Tally *counted, const double *bounds, Py_ssize_t bound_count, long long code,
          double seconds, PyObject *waited, int cold)
{
    Py_ssize_t s = 0;
    while (s < counted->status_count && counted->statuses[2 * s] != code) {
        s++;
    }
    if (s == counted->status_count) {
        long long *grown =
            PyMem_Realloc(counted->statuses, sizeof(long long) * 2 * (size_t)(s + 1));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        counted->statuses = grown;
        grown[2 * s] = code;
        grown[2 * s + 1] = 0;
        counted->status_count++;
    }
    counted->statuses[2 * s + 1]++;
    counted->requests++;
    counted->durations[bucket(bounds, bound_count, seconds)]++;
    counted->duration_sum += seconds;
    if (waited != Py_None) {
        double wait = PyFloat_AS_DOUBLE(waited);
        counted->waits[bucket(bounds, bound_count, wait)]++;
        counted->wait_sum += wait;
        counted->wait_count++;
    }
    if (cold) {
        counted->cold++;
    }
    return 0;
}

/* ``counted`` as ``tally`` gives it: (function, {status: requests}, duration bucket counts,
 * duration sum, queue-wait bucket counts, queue-wait sum, queue waits, cold starts); statuses
 * with no requests left out. */
static PyObject *
tally_entry(const Tally *counted, Py_ssize_t buckets)
{
    PyObject *statuses = PyDict_New();
    if (statuses == NULL) {
        return NULL;
    }
    for (Py_ssize_t s = 0; s < counted->status_count; s++) {
        if (counted->statuses[2 * s + 1] == 0) {
            continue;
        }
        PyObject *code = PyLong_FromLongLong(counted->statuses[2 * s]);
        PyObject *n = PyLong_FromLongLong(counted->statuses[2 * s + 1]);
        int failed = code == NULL || n == NULL || PyDict_SetItem(statuses, code, n) < 0;
        Py_XDECREF(code);
        Py_XDECREF(n);
        if (failed) {
            Py_DECREF(statuses);
            return NULL;
        }
    }
    PyObject *durations = counts_list(counted->durations, buckets);
    PyObject *waits = counts_list(counted->waits, buckets);
    PyObject *entry = NULL;
    if (durations != NULL && waits != NULL) {
        entry = Py_BuildValue(
            "(OOOdOdLL)", counted->function, statuses, durations, counted->duration_sum, waits,
            counted->wait_sum, counted->wait_count, counted->cold
        );
    }
    Py_DECREF(statuses);
    Py_XDECREF(durations);
    Py_XDECREF(waits);
    return entry;
}

PyDoc_STRVAR(tally_doc,
"tally(records, bounds, /)\n--\n\n"
"The records' requests counted by function: a list of (function, {status: requests},\n"
"duration bucket counts, duration sum, queue-wait bucket counts, queue-wait sum, queue\n"
"waits, cold starts), the buckets as bisect_left on ``bounds`` places a value (the last\n"
"one +Inf); records with no function (None) left out.");

static PyObject *
tally(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tally() takes records and bounds");
        return NULL;
    }
    PyObject *records = PySequence_Fast(args[0], "tally(): records must be a sequence");
    if (records == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    Tally *tallies = NULL;
    Py_ssize_t tally_count = 0;
    double *bounds = NULL;
    if (!PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "tally(): bounds must be a tuple of floats");
        goto done;
    }
    Py_ssize_t bound_count = PyTuple_GET_SIZE(args[1]);
    bounds = PyMem_Calloc((size_t)bound_count + 1, sizeof(double));
    if (bounds == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < bound_count; i++) {
        PyObject *bound = PyTuple_GET_ITEM(args[1], i);
        if (!PyFloat_CheckExact(bound)) {
            PyErr_SetString(PyExc_TypeError, "tally(): bounds must be a tuple of floats");
            goto done;
        }
        bounds[i] = PyFloat_AS_DOUBLE(bound);
    }
    Py_ssize_t buckets = bound_count + 1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    Tally *last = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *fields[FIELD_COUNT];
        if (record_fields(items[i], fields) < 0) {
            goto done;
        }
        PyObject *endpoint = fields[F_ENDPOINT];
        PyObject *status = fields[F_STATUS];
        PyObject *duration = fields[F_DURATION];
        PyObject *waited = fields[F_WAITED];
        PyObject *cold = fields[F_COLD];
        if (!PyTuple_Check(endpoint) || PyTuple_GET_SIZE(endpoint) != 5
            || !PyLong_CheckExact(status) || !PyFloat_CheckExact(duration)
            || !(waited == Py_None || PyFloat_CheckExact(waited)) || !PyBool_Check(cold)) {
            PyErr_SetString(PyExc_TypeError, "access record: a field of another type");
            goto done;
        }
        PyObject *function = PyTuple_GET_ITEM(endpoint, 0);
        if (function == Py_None) {
            continue;
        }
        int overflow = 0;
        long long code = PyLong_AsLongLongAndOverflow(status, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_TypeError, "access record: a status out of range");
            goto done;
        }
        Tally *counted = NULL;
        if (last != NULL && same_function(last->function, function)) {
            counted = last;
        }
        for (Py_ssize_t t = 0; counted == NULL && t < tally_count; t++) {
            if (same_function(tallies[t].function, function)) {
                counted = &tallies[t];
            }
        }
        if (counted == NULL) {
            Tally *grown = PyMem_Realloc(tallies, sizeof(Tally) * (size_t)(tally_count + 1));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            tallies = grown;
            counted = &tallies[tally_count++];
            memset(counted, 0, sizeof(Tally));
            counted->function = function;
            counted->durations = PyMem_Calloc((size_t)buckets, sizeof(long long));
            counted->waits = PyMem_Calloc((size_t)buckets, sizeof(long long));
            if (counted->durations == NULL || counted->waits == NULL) {
                PyErr_NoMemory();
                goto done;
            }
        }
        last = counted;
        if (tally_add(counted, bounds, bound_count, code, PyFloat_AS_DOUBLE(duration), waited,
                      cold == Py_True)
            < 0) {
            goto done;
        }
    }
    result = PyList_New(tally_count);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t t = 0; t < tally_count; t++) {
        PyObject *entry = tally_entry(&tallies[t], buckets);
        if (entry == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, t, entry);
    }
done:
    if (tallies != NULL) {
        tallies_free(tallies, tally_count);
    }
    PyMem_Free(bounds);
    Py_DECREF(records);
    return result;
}

PyDoc_STRVAR(functions_doc,
"functions(records, /)\n--\n\n"
"The distinct functions of the records' endpoints (a str, or None), in the order they\n"
"first come: most chunks are one function's, compared record by record with the last.");

static PyObject *
functions(PyObject *module, PyObject *arg)
{
    PyObject *records = PySequence_Fast(arg, "functions(): records must be a sequence");
    if (records == NULL) {
        return NULL;
    }
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        Py_DECREF(records);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    PyObject *last = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *fields[FIELD_COUNT];
        if (record_fields(items[i], fields) < 0) {
            goto failed;
        }
        PyObject *endpoint = fields[F_ENDPOINT];
        if (!PyTuple_Check(endpoint) || PyTuple_GET_SIZE(endpoint) != 5) {
            PyErr_SetString(PyExc_TypeError, "access record: an endpoint that is not a 5-tuple");
            goto failed;
        }
        PyObject *function = PyTuple_GET_ITEM(endpoint, 0);
        if (last != NULL && same_function(last, function)) {
            continue;
        }
        int seen = 0;
        Py_ssize_t known = PyList_GET_SIZE(result);
        for (Py_ssize_t k = 0; !seen && k < known; k++) {
            seen = same_function(PyList_GET_ITEM(result, k), function);
        }
        if (!seen && PyList_Append(result, function) < 0) {
            goto failed;
        }
        last = function;
    }
    Py_DECREF(records);
    return result;
failed:
    Py_DECREF(records);
    Py_DECREF(result);
    return NULL;
}

/* -- the journal: each record formatted, counted and kept as it comes ------------------ */

/* A line kept (a function's recent request), in memory of its own, reused by the next. */
typedef struct {
    char *text;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Line;

/* A function's counts since they were last taken (``tallies``), and its last lines. */
typedef struct {
    PyObject *function; /* a strong reference: a str (``counts.function``, borrowed, is it) */
    Tally counts;
    Line *recent; /* ``keep`` lines once the first came; the oldest at ``next`` once full */
    Py_ssize_t next;
    Py_ssize_t kept;
} Tracked;

/* Only str, tuples of str and None, and numbers are referenced (no cycle can go through a
 * journal): not tracked by the garbage collector. */
typedef struct {
    PyObject_HEAD
    Formatter formatter;
    Buffer pending; /* lines formatted since the last take, in a bytes object take hands on */
    Py_ssize_t pending_count;
    Py_ssize_t pending_start; /* the capacity a new pending buffer starts with */
    Py_ssize_t max_pending;
    Py_ssize_t batch;
    long long dropped; /* records not kept for want of room since the last take */
    int counting;
    double *bounds;
    Py_ssize_t bound_count;
    Tracked *tracked;
    Py_ssize_t tracked_count;
    Py_ssize_t tracked_capacity;
    PyObject *index; /* {function: its index in tracked} */
    Py_ssize_t last; /* the last record's function's index; -1: none */
    Py_ssize_t keep;
} Journal;

static void
tracked_free(Tracked *tracked, Py_ssize_t keep)
{
    Py_CLEAR(tracked->function);
    PyMem_Free(tracked->counts.statuses);
    PyMem_Free(tracked->counts.durations);
    PyMem_Free(tracked->counts.waits);
    if (tracked->recent != NULL) {
        for (Py_ssize_t i = 0; i < keep; i++) {
            PyMem_Free(tracked->recent[i].text);
        }
        PyMem_Free(tracked->recent);
    }
    memset(tracked, 0, sizeof(Tracked));
}

/* ``function``'s entry (made on its first record), or -1 with an error set. */
static Py_ssize_t
journal_tracked(Journal *journal, PyObject *function)
{
    Py_ssize_t last = journal->last;
    if (last >= 0 && same_function(journal->tracked[last].function, function)) {
        return last;
    }
    if (!PyUnicode_CheckExact(function)) {
        PyErr_SetString(PyExc_TypeError, "access record: a function that is not a str");
        return -1;
    }
    PyObject *found = PyDict_GetItemWithError(journal->index, function); /* borrowed */
    if (found != NULL) {
        journal->last = PyLong_AsSsize_t(found);
        return journal->last;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (journal->tracked_count == journal->tracked_capacity) {
        Py_ssize_t capacity = journal->tracked_capacity ? journal->tracked_capacity * 2 : 8;
        Tracked *grown = PyMem_Realloc(journal->tracked, sizeof(Tracked) * (size_t)capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        journal->tracked = grown;
        journal->tracked_capacity = capacity;
    }
    Py_ssize_t at = journal->tracked_count;
    Tracked *tracked = &journal->tracked[at];
    memset(tracked, 0, sizeof(Tracked));
    tracked->counts.durations =
        PyMem_Calloc((size_t)journal->bound_count + 1, sizeof(long long));
    tracked->counts.waits = PyMem_Calloc((size_t)journal->bound_count + 1, sizeof(long long));
    PyObject *number = PyLong_FromSsize_t(at);
    if (tracked->counts.durations == NULL || tracked->counts.waits == NULL || number == NULL
        || PyDict_SetItem(journal->index, function, number) < 0) {
        Py_XDECREF(number);
        tracked_free(tracked, 0);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    Py_DECREF(number);
    Py_INCREF(function);
    tracked->function = tracked->counts.function = function;
    journal->tracked_count++;
    journal->last = at;
    return at;
}

/* A copy of ``size`` bytes at ``text`` as the function's newest recent line. */
static int
tracked_keep(Tracked *tracked, Py_ssize_t keep, const char *text, Py_ssize_t size)
{
    if (keep <= 0) {
        return 0;
    }
    if (tracked->recent == NULL) {
        tracked->recent = PyMem_Calloc((size_t)keep, sizeof(Line));
        if (tracked->recent == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Line *line = &tracked->recent[tracked->next];
    if (line->capacity < size) {
        /* Room for a little more: the lines of a function vary by a few bytes. */
        char *grown = PyMem_Realloc(line->text, (size_t)size + 32);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        line->text = grown;
        line->capacity = size + 32;
    }
    memcpy(line->text, text, (size_t)size);
    line->size = size;
    tracked->next = (tracked->next + 1) % keep;
    if (tracked->kept < keep) {
        tracked->kept++;
    }
    return 0;
}

/* The flags ``add`` returns: what the log has to do about the record just added. */
enum { DUE_NOTHING = 0, DUE_FIRST = 1, DUE_BATCH = 2 };

static PyObject *
journal_add_record(Journal *journal, PyObject *record, int counted)
{
    PyObject *fields[FIELD_COUNT];
    if (record_fields(record, fields) < 0) {
        return NULL;
    }
    PyObject *status = fields[F_STATUS];
    PyObject *duration = fields[F_DURATION];
    PyObject *waited = fields[F_WAITED];
    if (!PyLong_CheckExact(status) || !PyFloat_CheckExact(duration)
        || !(waited == Py_None || PyFloat_CheckExact(waited))) {
        PyErr_SetString(PyExc_TypeError, "access record: a field of another type");
        return NULL;
    }
    Buffer *pending = &journal->pending;
    if (pending->bytes == NULL) {
        /* As large as the last batch was: written in place, handed on without a copy. */
        pending->bytes = PyBytes_FromStringAndSize(NULL, journal->pending_start);
        if (pending->bytes == NULL) {
            return NULL;
        }
        pending->data = PyBytes_AS_STRING(pending->bytes);
        pending->capacity = journal->pending_start;
        pending->size = 0;
    }
    Py_ssize_t start = pending->size;
    if (add_line(pending, &journal->formatter, fields) < 0) {
        pending->size = start; /* no part of a line */
        return NULL;
    }
    PyObject *function = PyTuple_GET_ITEM(fields[F_ENDPOINT], 0);
    if (function != Py_None) {
        int overflow = 0;
        long long code = PyLong_AsLongLongAndOverflow(status, &overflow);
        Py_ssize_t at = overflow ? -1 : journal_tracked(journal, function);
        if (at < 0) {
            if (overflow) {
                PyErr_SetString(PyExc_TypeError, "access record: a status out of range");
            }
            pending->size = start;
            return NULL;
        }
        Tracked *tracked = &journal->tracked[at];
        if (tracked_keep(tracked, journal->keep, pending->data + start, pending->size - start)
            < 0) {
            pending->size = start;
            return NULL;
        }
        if (counted && journal->counting
            && tally_add(&tracked->counts, journal->bounds, journal->bound_count, code,
                         PyFloat_AS_DOUBLE(duration), waited, fields[F_COLD] == Py_True)
                   < 0) {
            pending->size = start;
            return NULL;
        }
    }
    if (journal->pending_count >= journal->max_pending) {
        /* Not written (counted and kept all the same): the loss is said when written. */
        pending->size = start;
        journal->dropped++;
        return PyLong_FromLong(DUE_NOTHING);
    }
    journal->pending_count++;
    if (journal->pending_count == 1) {
        return PyLong_FromLong(DUE_FIRST);
    }
    return PyLong_FromLong(journal->pending_count == journal->batch ? DUE_BATCH : DUE_NOTHING);
}

PyDoc_STRVAR(journal_add_doc,
"add(record, /)\n--\n\n"
"The record's JSON line, pending until taken; counted into its function's counts (while\n"
"``counting``) and kept as its function's newest recent line. Returns 1 for the first\n"
"record pending since the last take, 2 for the one that makes ``batch``, else 0. Past\n"
"``max_pending`` records pending, the line is dropped (and counted in ``take``'s third).");

static PyObject *
journal_add(Journal *journal, PyObject *record)
{
    return journal_add_record(journal, record, 1);
}

PyDoc_STRVAR(journal_add_uncounted_doc,
"add_uncounted(record, /)\n--\n\n"
"As ``add``, the record not counted (its request is counted elsewhere).");

static PyObject *
journal_add_uncounted(Journal *journal, PyObject *record)
{
    return journal_add_record(journal, record, 0);
}

PyDoc_STRVAR(journal_take_doc,
"take()\n--\n\n"
"(lines, records, dropped): the lines pending (bytes) and how many records they are, and\n"
"how many were dropped since the last take; nothing is pending after.");

static PyObject *
journal_take(Journal *journal, PyObject *Py_UNUSED(ignored))
{
    Buffer *pending = &journal->pending;
    PyObject *lines;
    if (pending->bytes == NULL) {
        lines = PyBytes_FromStringAndSize(NULL, 0);
    }
    else {
        /* The next buffer as large as this one's lines and a quarter (4 KiB to 4 MiB). */
        Py_ssize_t size = pending->size;
        Py_ssize_t next = size + size / 4;
        journal->pending_start = next < 4096 ? 4096 : (next > (4 << 20) ? (4 << 20) : next);
        lines = pending->bytes; /* its reference, handed on */
        pending->bytes = NULL;
        pending->data = NULL;
        pending->capacity = pending->size = 0;
        if (_PyBytes_Resize(&lines, size) < 0) {
            return NULL;
        }
    }
    if (lines == NULL) {
        return NULL;
    }
    PyObject *result = Py_BuildValue("(NnL)", lines, journal->pending_count, journal->dropped);
    if (result == NULL) {
        return NULL;
    }
    journal->pending_count = 0;
    journal->dropped = 0;
    return result;
}

PyDoc_STRVAR(journal_tallies_doc,
"tallies()\n--\n\n"
"The requests counted since the last call, by function, as ``tally`` gives them; the\n"
"counts start again from nothing.");

static PyObject *
journal_tallies(Journal *journal, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t buckets = journal->bound_count + 1;
    for (Py_ssize_t t = 0; t < journal->tracked_count; t++) {
        Tally *counted = &journal->tracked[t].counts;
        if (counted->requests == 0) {
            continue;
        }
        PyObject *entry = tally_entry(counted, buckets);
        if (entry == NULL || PyList_Append(result, entry) < 0) {
            Py_XDECREF(entry);
            goto failed;
        }
        Py_DECREF(entry);
        /* Taken: the statuses seen stay, at nothing (a function answers with a few). */
        for (Py_ssize_t s = 0; s < counted->status_count; s++) {
            counted->statuses[2 * s + 1] = 0;
        }
        memset(counted->durations, 0, sizeof(long long) * (size_t)buckets);
        memset(counted->waits, 0, sizeof(long long) * (size_t)buckets);
        counted->duration_sum = counted->wait_sum = 0.0;
        counted->wait_count = counted->cold = counted->requests = 0;
    }
    return result;
failed:
    Py_DECREF(result);
    return NULL;
}

PyDoc_STRVAR(journal_recent_doc,
"recent(function, limit, /)\n--\n\n"
"The function's last lines (bytes, each ending in a newline), at most ``limit`` of the\n"
"``keep`` kept, oldest first.");

static PyObject *
journal_recent(Journal *journal, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recent() takes a function and a limit");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(journal->index, args[0]);
    if (found == NULL) {
        return PyErr_Occurred() ? NULL : PyList_New(0);
    }
    Tracked *tracked = &journal->tracked[PyLong_AsSsize_t(found)];
    Py_ssize_t count = tracked->kept < limit ? tracked->kept : (limit > 0 ? limit : 0);
    PyObject *result = PyList_New(count);
    if (result == NULL) {
        return NULL;
    }
    /* The oldest of the ``count`` newest: ``count`` back from the next to write. */
    Py_ssize_t keep = journal->keep;
    for (Py_ssize_t i = 0; i < count; i++) {
        Line *line = &tracked->recent[(tracked->next - count + i + keep) % keep];
        PyObject *text = PyBytes_FromStringAndSize(line->text, line->size);
        if (text == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, i, text);
    }
    return result;
}

PyDoc_STRVAR(journal_functions_doc,
"functions()\n--\n\n"
"The functions it keeps lines of, in the order their first came.");

static PyObject *
journal_functions(Journal *journal, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        return NULL;
    }
    for (Py_ssize_t t = 0; t < journal->tracked_count; t++) {
        if (journal->tracked[t].kept && PyList_Append(result, journal->tracked[t].function) < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

PyDoc_STRVAR(journal_forget_doc,
"forget(function, /)\n--\n\n"
"The function was deleted: its lines and counts not taken are let go.");

static PyObject *
journal_forget(Journal *journal, PyObject *function)
{
    PyObject *found = PyDict_GetItemWithError(journal->index, function);
    if (found == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t at = PyLong_AsSsize_t(found);
    Py_ssize_t moved = journal->tracked_count - 1;
    if (PyDict_DelItem(journal->index, function) < 0) {
        return NULL;
    }
    tracked_free(&journal->tracked[at], journal->keep);
    if (at != moved) {
        /* The last entry takes the freed place. */
        journal->tracked[at] = journal->tracked[moved];
        PyObject *number = PyLong_FromSsize_t(at);
        if (number == NULL
            || PyDict_SetItem(journal->index, journal->tracked[at].function, number) < 0) {
            Py_XDECREF(number);
            return NULL;
        }
        Py_DECREF(number);
    }
    journal->tracked_count--;
    journal->last = -1;
    Py_RETURN_NONE;
}

static PyObject *
journal_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"prefix", "bounds", "keep", "max_pending", "batch", NULL};
    PyObject *prefix, *bounds;
    Py_ssize_t keep, max_pending, batch;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UO!nnn:Journal", keywords, &prefix,
                                     &PyTuple_Type, &bounds, &keep, &max_pending, &batch)) {
        return NULL;
    }
    if (keep < 0 || max_pending < 0 || batch < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "Journal(): keep and max_pending must be >= 0, batch >= 1");
        return NULL;
    }
    Journal *journal = (Journal *)type->tp_alloc(type, 0);
    if (journal == NULL) {
        return NULL;
    }
    /* tp_alloc zeroed it: every pointer NULL, dealloc safe from here. */
    journal->last = -1;
    journal->pending_start = 4096;
    journal->keep = keep;
    journal->max_pending = max_pending;
    journal->batch = batch;
    journal->counting = 0;
    journal->index = PyDict_New();
    if (journal->index == NULL || formatter_init(&journal->formatter, prefix, 0.0) < 0) {
        Py_DECREF(journal);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(bounds);
    journal->bounds = PyMem_Calloc((size_t)count + 1, sizeof(double));
    if (journal->bounds == NULL) {
        Py_DECREF(journal);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *bound = PyTuple_GET_ITEM(bounds, i);
        if (!PyFloat_CheckExact(bound)) {
            Py_DECREF(journal);
            PyErr_SetString(PyExc_TypeError, "Journal(): bounds must be a tuple of floats");
            return NULL;
        }
        journal->bounds[i] = PyFloat_AS_DOUBLE(bound);
    }
    journal->bound_count = count;
    return (PyObject *)journal;
}

static void
journal_dealloc(Journal *journal)
{
    formatter_clear(&journal->formatter);
    Py_XDECREF(journal->pending.bytes);
    PyMem_Free(journal->bounds);
    for (Py_ssize_t t = 0; t < journal->tracked_count; t++) {
        tracked_free(&journal->tracked[t], journal->keep);
    }
    PyMem_Free(journal->tracked);
    Py_XDECREF(journal->index);
    Py_TYPE(journal)->tp_free((PyObject *)journal);
}

static PyObject *
journal_get_offset(Journal *journal, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(journal->formatter.offset);
}

static int
journal_set_offset(Journal *journal, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "offset cannot be deleted");
        return -1;
    }
    double offset = PyFloat_AsDouble(value);
    if (offset == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    journal->formatter.offset = offset;
    return 0;
}

static PyObject *
journal_get_counting(Journal *journal, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(journal->counting);
}

static int
journal_set_counting(Journal *journal, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "counting cannot be deleted");
        return -1;
    }
    int counting = PyObject_IsTrue(value);
    if (counting < 0) {
        return -1;
    }
    journal->counting = counting;
    return 0;
}

static PyObject *
journal_get_pending(Journal *journal, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(journal->pending_count);
}

static PyObject *
journal_get_dropped(Journal *journal, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(journal->dropped);
}

static PyGetSetDef journal_getset[] = {
    {"offset", (getter)journal_get_offset, (setter)journal_set_offset,
     "Added to a record's monotonic time: its wall time (set anew at each take).", NULL},
    {"counting", (getter)journal_get_counting, (setter)journal_set_counting,
     "Whether ``add`` counts records into their function's counts.", NULL},
    {"pending", (getter)journal_get_pending, NULL, "Records pending, not taken yet.", NULL},
    {"dropped", (getter)journal_get_dropped, NULL,
     "Records dropped since the last take (past max_pending).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef journal_methods[] = {
    {"add", (PyCFunction)journal_add, METH_O, journal_add_doc},
    {"add_uncounted", (PyCFunction)journal_add_uncounted, METH_O, journal_add_uncounted_doc},
    {"take", (PyCFunction)journal_take, METH_NOARGS, journal_take_doc},
    {"tallies", (PyCFunction)journal_tallies, METH_NOARGS, journal_tallies_doc},
    {"recent", (PyCFunction)(void (*)(void))journal_recent, METH_FASTCALL, journal_recent_doc},
    {"functions", (PyCFunction)journal_functions, METH_NOARGS, journal_functions_doc},
    {"forget", (PyCFunction)journal_forget, METH_O, journal_forget_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(journal_doc,
"Journal(prefix, bounds, keep, max_pending, batch)\n--\n\n"
"The access log of a router's event loop, record by record: each record's JSON line is\n"
"made when it is added (its fields still in the CPU's caches, the record then let go),\n"
"its request counted by function (``bounds``: the histograms' buckets' upper bounds) and\n"
"its line kept among its function's last ``keep``. ``take`` hands the lines on.");

static PyTypeObject JournalType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fissile.observability._records.Journal",
    .tp_basicsize = sizeof(Journal),
    .tp_dealloc = (destructor)journal_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = journal_doc,
    .tp_methods = journal_methods,
    .tp_getset = journal_getset,
    .tp_new = journal_new,
};

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)bind, METH_O, bind_doc},
    {"functions", (PyCFunction)functions, METH_O, functions_doc},
    {"json_lines", (PyCFunction)(void (*)(void))json_lines, METH_FASTCALL, json_lines_doc},
    {"tally", (PyCFunction)(void (*)(void))tally, METH_FASTCALL, tally_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fissile.observability._records",
    .m_doc = "The access log's records in C: their JSON lines, their counts.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    for (int c = ' '; c <= '~'; c++) {
        PLAIN[c] = c != '\\' && c != '"';
    }
    if (PyType_Ready(&JournalType) < 0) {
        return NULL;
    }
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) {
        return NULL;
    }
    Py_INCREF(&JournalType);
    if (PyModule_AddObject(created, "Journal", (PyObject *)&JournalType) < 0) {
        Py_DECREF(&JournalType);
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
