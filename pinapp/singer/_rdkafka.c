/* pinapp.singer._rdkafka: Singer's per-line loop in C, on librdkafka's C API.
 *
 * Why C: in Python, every line took Python's lock for reading it, keying it, one produce()
 * call and (in confluent-kafka) its delivery report, ~1.3 us a line one step after another,
 * under half of kcat's rate on a small machine (docs/benchmarks.md). Here a whole chunk of
 * lines is keyed and handed to librdkafka in one call, and delivery reports never enter
 * Python: only failures are counted.
 *
 * What stays in Python: reading, batching, watermarks, retries, and the key rule for every line
 * this file's scanner does not handle (see key_of): those come back to the caller, which keys
 * them with pinapp.singer.shipper.line_key and produces them with produce().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <string.h>

/* Each message's opaque says what a failed delivery means. */
#define KIND_LINE ((void *)1)      /* a line of the batch: the batch fails */
#define KIND_HEARTBEAT ((void *)2) /* a status record: only counted */

#define MAX_LOGS 1000
#define MAX_PIN_TYPES 16

static PyObject *KafkaError; /* pinapp.singer._rdkafka.KafkaError */

typedef struct {
    int level;
    char facility[32];
    char message[512];
} LogLine;

/* The event types keyed by pin_id (pinapp.domain.events.PIN_EVENT_TYPES), as C strings. */
typedef struct {
    const char *names[MAX_PIN_TYPES];
    size_t lens[MAX_PIN_TYPES];
    int n;
} PinTypes;

typedef struct {
    PyObject_HEAD
    rd_kafka_t *rk;
    PinTypes pin_types; /* strdup'ed */
    /* Written from librdkafka's callbacks (delivery and error reports on the thread that
     * polls or flushes; log lines on any of its threads), so under a lock. */
    pthread_mutex_t lock;
    pthread_cond_t idle; /* signalled when ``active`` drops to 0 */
    int active;          /* calls using ``rk`` right now: close() waits for them */
    long line_failures;
    long heartbeat_failures;
    char first_failure[256];
    char fatal[512];
    LogLine logs[MAX_LOGS];
    int n_logs;
    long logs_dropped;
} Producer;

/* -- the key rule ------------------------------------------------------------------------- */

enum { F_OTHER, F_EVENT_TYPE, F_USER_ID, F_PIN_ID };

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* p at an opening quote: the closing quote, or NULL. */
static const char *string_end(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p;
    }
    return NULL;
}

/* Past one JSON value at p (a string, an object or array with what it holds, or a scalar). */
static const char *skip_value(const char *p, const char *end) {
    if (p >= end)
        return NULL;
    if (*p == '"') {
        const char *q = string_end(p, end);
        return q ? q + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                if (!(p = string_end(p, end)))
                    return NULL;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && !strchr(",}] \t\r\n", *p))
        p++;
    return p > start ? p : NULL;
}

static int field_of(const char *name, size_t len) {
    if (len == 10 && memcmp(name, "event_type", 10) == 0)
        return F_EVENT_TYPE;
    if (len == 7 && memcmp(name, "user_id", 7) == 0)
        return F_USER_ID;
    if (len == 6 && memcmp(name, "pin_id", 6) == 0)
        return F_PIN_ID;
    return F_OTHER;
}

/* The topology's key rule (pin_id for pin events, else user_id) for one line, when the line is
 * a JSON object whose event_type and user_id (and pin_id, if there) are top-level strings of
 * plain ASCII (or, for the ids, JSON integers of up to 20 digits), each given once, pin_id
 * possibly null: key and klen point into the line, 1 is returned. Anything else returns 0,
 * and the caller applies the rule in Python (line_key), which decides every unusual case
 * (escapes, other types, missing fields, duplicates, non-JSON).
 *
 * For a valid JSON line the result is exactly line_key's. The values the rule does not read
 * are skipped, not validated: a line that is not valid JSON elsewhere can get a key here where
 * line_key gives none. The topology dead-letters such a line wherever it lands. */
static int key_of(const PinTypes *pin_types, const char *line, size_t n, const char **key, size_t *klen) {
    const char *p = skip_ws(line, line + n), *end = line + n;
    const char *value[4] = {NULL, NULL, NULL, NULL};
    size_t vlen[4] = {0, 0, 0, 0};
    int seen[4] = {0, 0, 0, 0};

    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return 0;
    for (;;) {
        if (p >= end || *p != '"')
            return 0;
        const char *name = p + 1, *name_end = string_end(p, end);
        if (!name_end || memchr(name, '\\', (size_t)(name_end - name)))
            return 0;
        int field = field_of(name, (size_t)(name_end - name));
        p = skip_ws(name_end + 1, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        if (field != F_OTHER) {
            if (seen[field]++)
                return 0; /* given twice: a JSON parser keeps the last one; line_key decides */
            if (p < end && *p == '"') {
                const char *v = p + 1, *v_end = string_end(p, end);
                if (!v_end)
                    return 0;
                for (const char *c = v; c < v_end; c++)
                    if (*c == '\\' || (unsigned char)*c >= 0x80)
                        return 0;
                value[field] = v;
                vlen[field] = (size_t)(v_end - v);
                p = v_end + 1;
            } else if (field == F_PIN_ID && end - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;
            } else if (field != F_EVENT_TYPE && p < end && *p >= '0' && *p <= '9') {
                /* an integer id: keyed as its digits, which are its decimal string (JSON has no
                 * leading zeros); a fraction, an exponent, a sign or over 20 digits: line_key */
                const char *v = p;
                while (p < end && *p >= '0' && *p <= '9')
                    p++;
                if ((p - v > 1 && *v == '0') || p - v > 20 ||
                    (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
                    return 0;
                value[field] = v;
                vlen[field] = (size_t)(p - v);
            } else {
                return 0;
            }
        } else if (!(p = skip_value(p, end))) {
            return 0;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}')
            break;
        return 0;
    }
    if (skip_ws(p + 1, end) != end || !value[F_EVENT_TYPE] || !value[F_USER_ID])
        return 0;
    if (value[F_PIN_ID]) {
        for (int i = 0; i < pin_types->n; i++) {
            if (pin_types->lens[i] == vlen[F_EVENT_TYPE] &&
                memcmp(pin_types->names[i], value[F_EVENT_TYPE], vlen[F_EVENT_TYPE]) == 0) {
                *key = value[F_PIN_ID];
                *klen = vlen[F_PIN_ID];
                return 1;
            }
        }
    }
    *key = value[F_USER_ID];
    *klen = vlen[F_USER_ID];
    return 1;
}

/* -- librdkafka's callbacks (no Python in them) ----------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    Producer *self = opaque;
    (void)rk;
    if (!msg->err)
        return;
    pthread_mutex_lock(&self->lock);
    if (msg->_private == KIND_HEARTBEAT) {
        self->heartbeat_failures++;
    } else {
        if (self->line_failures++ == 0)
            snprintf(self->first_failure, sizeof self->first_failure, "%s", rd_kafka_err2str(msg->err));
    }
    pthread_mutex_unlock(&self->lock);
}

static void add_log(Producer *self, int level, const char *facility, const char *message) {
    pthread_mutex_lock(&self->lock);
    if (self->n_logs < MAX_LOGS) {
        LogLine *l = &self->logs[self->n_logs++];
        l->level = level;
        snprintf(l->facility, sizeof l->facility, "%s", facility);
        snprintf(l->message, sizeof l->message, "%s", message);
    } else {
        self->logs_dropped++;
    }
    pthread_mutex_unlock(&self->lock);
}

static void on_log(const rd_kafka_t *rk, int level, const char *facility, const char *message) {
    add_log(rd_kafka_opaque(rk), level, facility, message);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    Producer *self = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char detail[480];
        rd_kafka_fatal_error(rk, detail, sizeof detail);
        pthread_mutex_lock(&self->lock);
        snprintf(self->fatal, sizeof self->fatal, "%s", detail);
        pthread_mutex_unlock(&self->lock);
        add_log(self, 3, "FATAL", detail);
    } else {
        add_log(self, 7, "ERROR", reason); /* librdkafka logs these itself; kept for debugging */
    }
}

/* -- the Producer type -------------------------------------------------------------------- */

/* ``types`` (a sequence of str) into ``out``; with ``copy`` the names are strdup'ed, else they
 * point into the str objects, which must then outlive ``out``. */
static int pin_types_of(PyObject *types, PinTypes *out, int copy) {
    PyObject *seq = PySequence_Fast(types, "pin_event_types must be a sequence of str");
    if (!seq)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) > MAX_PIN_TYPES) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many pin_event_types");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_ssize_t len;
        const char *name = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (name && copy && !(name = strdup(name)))
            PyErr_NoMemory();
        if (!name) {
            Py_DECREF(seq);
            return -1;
        }
        out->names[i] = name;
        out->lens[i] = (size_t)len;
        out->n = (int)i + 1;
    }
    Py_DECREF(seq);
    return 0;
}

static int Producer_init(Producer *self, PyObject *args, PyObject *kwargs) {
    static char *kws[] = {"config", "pin_event_types", NULL};
    PyObject *config, *pin_types;
    char err[512];

    if (self->rk) {
        PyErr_SetString(PyExc_RuntimeError, "Producer is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O", kws, &PyDict_Type, &config, &pin_types))
        return -1;
    if (pin_types_of(pin_types, &self->pin_types, 1) < 0)
        return -1;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(config, &pos, &name, &value)) {
        const char *n = PyUnicode_AsUTF8(name), *v = PyUnicode_AsUTF8(value);
        if (!n || !v) {
            rd_kafka_conf_destroy(conf);
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "config names and values must be str");
            }
            return -1;
        }
        if (rd_kafka_conf_set(conf, n, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            PyErr_Format(PyExc_ValueError, "librdkafka setting %s=%s: %s", n, v, err);
            return -1;
        }
    }
    rd_kafka_conf_set_opaque(conf, self);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    if (!(self->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only on success */
        PyErr_Format(KafkaError, "could not create a producer: %s", err);
        return -1;
    }
    return 0;
}

static PyObject *Producer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Producer *self = (Producer *)type->tp_alloc(type, 0);
    if (self) {
        pthread_mutex_init(&self->lock, NULL);
        pthread_cond_init(&self->idle, NULL);
    }
    return (PyObject *)self;
}

/* Every call that uses ``rk`` runs between begin_use and end_use, so that close() on another
 * thread (say, after a cancelled wait whose flush() still runs in its thread) waits for it
 * instead of destroying ``rk`` under it. */
static int begin_use(Producer *self) {
    pthread_mutex_lock(&self->lock);
    int open = self->rk != NULL;
    if (open)
        self->active++;
    pthread_mutex_unlock(&self->lock);
    if (!open)
        PyErr_SetString(KafkaError, "the producer is closed");
    return open;
}

static void end_use(Producer *self) {
    pthread_mutex_lock(&self->lock);
    if (--self->active == 0)
        pthread_cond_broadcast(&self->idle);
    pthread_mutex_unlock(&self->lock);
}

static void destroy(Producer *self) {
    rd_kafka_t *rk;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&self->lock);
    while (self->active > 0)
        pthread_cond_wait(&self->idle, &self->lock);
    rk = self->rk;
    self->rk = NULL;
    pthread_mutex_unlock(&self->lock);
    if (rk)
        rd_kafka_destroy(rk);
    Py_END_ALLOW_THREADS
}

static void Producer_dealloc(Producer *self) {
    destroy(self);
    for (int i = 0; i < self->pin_types.n; i++)
        free((char *)self->pin_types.names[i]);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *raise_err(rd_kafka_resp_err_t err, const char *what) {
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        PyErr_Format(PyExc_BufferError, "%s: %s", what, rd_kafka_err2str(err));
    else
        PyErr_Format(KafkaError, "%s: %s", what, rd_kafka_err2str(err));
    return NULL;
}

static PyObject *Producer_produce_lines(Producer *self, PyObject *args) {
    const char *topic;
    PyObject *lines;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "sO!n", &topic, &PyList_Type, &lines, &i) || !begin_use(self))
        return NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(self->rk, topic, NULL);
    if (!rkt) {
        end_use(self);
        return raise_err(rd_kafka_last_error(), "topic");
    }
    PyObject *result = NULL;
    for (; i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        const char *key;
        size_t klen;
        if (!PyBytes_Check(line)) {
            PyErr_Format(PyExc_TypeError, "line %zd is not bytes", i);
            goto done;
        }
        if (!key_of(&self->pin_types, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line), &key, &klen))
            break; /* for line_key, in Python */
        int held = 0;
        while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, PyBytes_AS_STRING(line),
                                (size_t)PyBytes_GET_SIZE(line), key, klen, KIND_LINE) == -1) {
            rd_kafka_resp_err_t err = rd_kafka_last_error();
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                if (held)
                    Py_DECREF(line);
                raise_err(err, "produce");
                goto done;
            }
            if (!held) { /* the list is the caller's: keep the line while Python runs meanwhile */
                Py_INCREF(line);
                held = 1;
            }
            Py_BEGIN_ALLOW_THREADS rd_kafka_poll(self->rk, 10); /* the queue drains as the broker acks */
            Py_END_ALLOW_THREADS
        }
        if (held)
            Py_DECREF(line);
        if ((i & 1023) == 0)
            rd_kafka_poll(self->rk, 0); /* serve delivery reports as they come, as kcat does */
    }
    result = PyLong_FromSsize_t(i);
done:
    rd_kafka_topic_destroy(rkt);
    end_use(self);
    return result;
}

static PyObject *Producer_produce(Producer *self, PyObject *args, PyObject *kwargs) {
    static char *kws[] = {"topic", "value", "key", "headers", "heartbeat", NULL};
    const char *topic, *value, *key = NULL;
    Py_ssize_t vlen, klen = 0;
    PyObject *headers = Py_None;
    int heartbeat = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sy#|z#Op", kws, &topic, &value, &vlen, &key, &klen, &headers,
                                     &heartbeat))
        return NULL;
    rd_kafka_headers_t *hdrs = NULL;
    if (headers != Py_None) {
        PyObject *seq = PySequence_Fast(headers, "headers must be a sequence of (str, bytes)");
        if (!seq)
            return NULL;
        hdrs = rd_kafka_headers_new((size_t)PySequence_Fast_GET_SIZE(seq));
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            const char *hname, *hvalue;
            Py_ssize_t hlen;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "sy#", &hname, &hvalue, &hlen)) {
                Py_DECREF(seq);
                rd_kafka_headers_destroy(hdrs);
                return NULL;
            }
            rd_kafka_header_add(hdrs, hname, -1, hvalue, hlen);
        }
        Py_DECREF(seq);
    }
    void *kind = heartbeat ? KIND_HEARTBEAT : KIND_LINE;
    if (!begin_use(self)) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    rd_kafka_resp_err_t err =
        hdrs ? rd_kafka_producev(self->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_VALUE((void *)value, (size_t)vlen), RD_KAFKA_V_KEY(key, (size_t)klen),
                                 RD_KAFKA_V_OPAQUE(kind), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END)
             : rd_kafka_producev(self->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_VALUE((void *)value, (size_t)vlen), RD_KAFKA_V_KEY(key, (size_t)klen),
                                 RD_KAFKA_V_OPAQUE(kind), RD_KAFKA_V_END);
    end_use(self);
    if (err) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs); /* librdkafka owns them only once the message is queued */
        return raise_err(err, "produce");
    }
    Py_RETURN_NONE;
}

static PyObject *Producer_flush(Producer *self, PyObject *args) {
    double timeout_s;
    if (!PyArg_ParseTuple(args, "d", &timeout_s) || !begin_use(self))
        return NULL;
    int left;
    Py_BEGIN_ALLOW_THREADS rd_kafka_flush(self->rk, (int)(timeout_s * 1000));
    left = rd_kafka_outq_len(self->rk);
    Py_END_ALLOW_THREADS
    end_use(self);
    return PyLong_FromLong(left);
}

static PyObject *Producer_wait_for_topic(Producer *self, PyObject *args) {
    const char *topic;
    double timeout_s;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    if (!PyArg_ParseTuple(args, "sd", &topic, &timeout_s) || !begin_use(self))
        return NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(self->rk, topic, NULL);
    if (!rkt) {
        end_use(self);
        return raise_err(rd_kafka_last_error(), "topic");
    }
    Py_BEGIN_ALLOW_THREADS err = rd_kafka_metadata(self->rk, 0, rkt, &md, (int)(timeout_s * 1000));
    Py_END_ALLOW_THREADS
    rd_kafka_topic_destroy(rkt);
    end_use(self);
    if (err)
        return raise_err(err, topic);
    int partitions = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : -1;
    rd_kafka_resp_err_t topic_err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    rd_kafka_metadata_destroy(md);
    if (partitions < 0)
        return raise_err(topic_err, topic);
    return PyLong_FromLong(partitions);
}

static PyObject *Producer_take_failures(Producer *self, PyObject *unused) {
    pthread_mutex_lock(&self->lock);
    long lines = self->line_failures, heartbeats = self->heartbeat_failures;
    char first[256];
    snprintf(first, sizeof first, "%s", self->first_failure);
    self->line_failures = self->heartbeat_failures = 0;
    self->first_failure[0] = '\0';
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(lzl)", lines, lines ? first : NULL, heartbeats);
}

static PyObject *Producer_fatal_error(Producer *self, PyObject *unused) {
    char fatal[512];
    pthread_mutex_lock(&self->lock);
    snprintf(fatal, sizeof fatal, "%s", self->fatal);
    pthread_mutex_unlock(&self->lock);
    if (!fatal[0])
        Py_RETURN_NONE;
    return PyUnicode_FromString(fatal);
}

static PyObject *Producer_take_logs(Producer *self, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    pthread_mutex_lock(&self->lock);
    int n = self->n_logs;
    long dropped = self->logs_dropped;
    LogLine *copy = n ? PyMem_RawMalloc(sizeof(LogLine) * (size_t)n) : NULL;
    if (copy)
        memcpy(copy, self->logs, sizeof(LogLine) * (size_t)n);
    self->n_logs = 0;
    self->logs_dropped = 0;
    pthread_mutex_unlock(&self->lock);
    if (n && !copy) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("(iss)", copy[i].level, copy[i].facility, copy[i].message);
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            PyMem_RawFree(copy);
            return NULL;
        }
        Py_DECREF(item);
    }
    PyMem_RawFree(copy);
    if (dropped) {
        PyObject *item = Py_BuildValue("(iss)", 4, "LOG", "log lines dropped: too many between two reads");
        if (item) {
            PyList_Append(out, item);
            Py_DECREF(item);
        }
    }
    return out;
}

static PyObject *Producer_purge(Producer *self, PyObject *unused) {
    if (!begin_use(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS rd_kafka_purge(self->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(self->rk, 0); /* serves the purged messages' reports */
    Py_END_ALLOW_THREADS
    end_use(self);
    Py_RETURN_NONE;
}

static PyObject *Producer_close(Producer *self, PyObject *unused) {
    destroy(self);
    Py_RETURN_NONE;
}

static PyObject *scan_key(PyObject *module, PyObject *args) {
    /* key_of for one line, for tests: the key, or None where line_key must decide. */
    Py_buffer line;
    PyObject *types;
    PinTypes pin_types = {0};
    const char *key;
    size_t klen;
    if (!PyArg_ParseTuple(args, "y*O", &line, &types))
        return NULL;
    PyObject *out = NULL, *held = PySequence_Fast(types, "pin_event_types must be a sequence of str");
    /* The names point into ``held``'s str objects, kept alive until key_of is done. */
    if (held && pin_types_of(held, &pin_types, 0) == 0)
        out = key_of(&pin_types, line.buf, (size_t)line.len, &key, &klen) ? PyBytes_FromStringAndSize(key, (Py_ssize_t)klen)
                                                                            : Py_NewRef(Py_None);
    Py_XDECREF(held);
    PyBuffer_Release(&line);
    return out;
}

static PyMethodDef Producer_methods[] = {
    {"produce_lines", (PyCFunction)Producer_produce_lines, METH_VARARGS,
     "produce_lines(topic, lines, start) -> int: produce lines[start:] with the key rule, in order, up to the "
     "first line the C rule leaves to line_key; returns its index (len(lines) when all went)."},
    {"produce", (PyCFunction)(void (*)(void))Producer_produce, METH_VARARGS | METH_KEYWORDS,
     "produce(topic, value, key=None, headers=None, heartbeat=False): one record; a failed heartbeat does "
     "not count as a failed line."},
    {"flush", (PyCFunction)Producer_flush, METH_VARARGS,
     "flush(timeout_s) -> int: wait until every record is delivered or failed; returns those left."},
    {"wait_for_topic", (PyCFunction)Producer_wait_for_topic, METH_VARARGS,
     "wait_for_topic(topic, timeout_s) -> int: fetch the topic's metadata; returns its partitions."},
    {"take_failures", (PyCFunction)Producer_take_failures, METH_NOARGS,
     "take_failures() -> (lines failed, the first failure, heartbeats failed) since the last call."},
    {"fatal_error", (PyCFunction)Producer_fatal_error, METH_NOARGS, "The producer's fatal error, or None."},
    {"take_logs", (PyCFunction)Producer_take_logs, METH_NOARGS,
     "take_logs() -> [(syslog level, facility, message)]: librdkafka's log lines since the last call."},
    {"purge", (PyCFunction)Producer_purge, METH_NOARGS, "Drop every queued and in-flight record."},
    {"close", (PyCFunction)Producer_close, METH_NOARGS, "Destroy the producer (without flushing)."},
    {NULL},
};

static PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pinapp.singer._rdkafka.Producer",
    .tp_doc = "A librdkafka producer for Singer: Producer(config: dict[str, str], pin_event_types)",
    .tp_basicsize = sizeof(Producer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Producer_new,
    .tp_init = (initproc)Producer_init,
    .tp_dealloc = (destructor)Producer_dealloc,
    .tp_methods = Producer_methods,
};

static PyMethodDef module_methods[] = {
    {"scan_key", scan_key, METH_VARARGS,
     "scan_key(line, pin_event_types) -> bytes | None: the C key rule for one line; None where line_key decides."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pinapp.singer._rdkafka",
    "Singer's per-line loop on librdkafka's C API (see _rdkafka.c for why).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__rdkafka(void) {
    if (PyType_Ready(&ProducerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    /* A PinappError, the project's one base exception. */
    PyObject *errors = PyImport_ImportModule("pinapp.errors");
    PyObject *base = errors ? PyObject_GetAttrString(errors, "PinappError") : NULL;
    Py_XDECREF(errors);
    if (!base) {
        Py_DECREF(m);
        return NULL;
    }
    KafkaError = PyErr_NewExceptionWithDoc("pinapp.singer._rdkafka.KafkaError",
                                           "librdkafka refused a call, or a topic could not be described.", base,
                                           NULL);
    Py_DECREF(base);
    if (!KafkaError || PyModule_AddObjectRef(m, "KafkaError", KafkaError) < 0 ||
        PyModule_AddObjectRef(m, "Producer", (PyObject *)&ProducerType) < 0 ||
        PyModule_AddStringConstant(m, "librdkafka_version", rd_kafka_version_str()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
