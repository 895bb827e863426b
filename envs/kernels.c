/* The per-step arithmetic of a CellEnv, compiled: skillcell.envs.kernels.

Why C: a control step of a weld cell is ~130 us of physics, and the Python around it cost ~35 us
(callgrind: a mju_* binding call on a 4-vector ~7,800 instructions, a numpy item write ~600, a
Python function call on floats ~1,000), where the throughput target (0.85 of raw mj_step) allows
~23. Each kernel here is bound once to the buffers it reads and writes (views into mjData, the
env's own arrays: mjData's arrays never move), so a step's call passes no arrays.

Bits: every operation is the one the replaced code performed, in its order, in IEEE double
arithmetic (built with -ffp-contract=off and no fast-math: no fused multiply-adds, no
reassociation), and the libm functions are those CPython's math module calls; the MuJoCo routines
(mju_dot's AVX lane order, mju_cholFactor, mju_cholSolve, mju_mulMatTVec) are re-stated in the
order of their scalar equivalents. tests/test_hot_path.py compares each kernel bit for bit with
the numpy, MuJoCo or Python formulation it replaced; tests/test_golden.py whole episodes.

No numpy C API: buffers through the buffer protocol, calls through METH_FASTCALL.
*/

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MINVAL 1e-15 /* MuJoCo's mjMINVAL */

/* ------------------------------------------------------------------ buffers */

/* A float64 C-contiguous buffer of at least `size` elements (writable if asked); 0 on success. */
static int get_doubles(PyObject* obj, Py_buffer* view, Py_ssize_t size, int writable, const char* name) {
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) < 0) {
    PyErr_Format(PyExc_TypeError, "%s: needs a C-contiguous%s float64 array", name, writable ? " writable" : "");
    return -1;
  }
  const char* f = view->format ? view->format : "B";
  if (view->itemsize != 8 || !(strcmp(f, "d") == 0 || strcmp(f, "<d") == 0 || strcmp(f, "=d") == 0)) {
    PyBuffer_Release(view);
    PyErr_Format(PyExc_TypeError, "%s: needs float64 values, got format %s", name, f);
    return -1;
  }
  if (view->len / 8 < size) {
    Py_ssize_t got = view->len / 8;
    PyBuffer_Release(view);
    PyErr_Format(PyExc_ValueError, "%s: needs at least %zd values, got %zd", name, size, got);
    return -1;
  }
  return 0;
}

/* A sequence of `n` non-negative ints below `bound` into `out`; 0 on success. */
static int get_indices(PyObject* seq, int* out, Py_ssize_t n, Py_ssize_t bound, const char* name) {
  PyObject* fast = PySequence_Fast(seq, name);
  if (!fast) return -1;
  if (PySequence_Fast_GET_SIZE(fast) != n) {
    PyErr_Format(PyExc_ValueError, "%s: needs %zd indices, got %zd", name, n, PySequence_Fast_GET_SIZE(fast));
    Py_DECREF(fast);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    Py_ssize_t v = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i), PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) {
      Py_DECREF(fast);
      return -1;
    }
    if (v < 0 || v >= bound) {
      PyErr_Format(PyExc_ValueError, "%s: index %zd out of range [0, %zd)", name, v, bound);
      Py_DECREF(fast);
      return -1;
    }
    out[i] = (int)v;
  }
  Py_DECREF(fast);
  return 0;
}

/* ------------------------------------------------------------------ MuJoCo's arithmetic */

/* mju_dot, in the lane order of its AVX build (what the MuJoCo wheels ship): four running
   products, reduced as (0 + 2) + (1 + 3), then the remainder added as one sum. */
static double mj_dot(const double* a, const double* b, int n) {
  double res = 0;
  int i = 0;
  if (n >= 4) {
    double s0 = a[0] * b[0], s1 = a[1] * b[1], s2 = a[2] * b[2], s3 = a[3] * b[3];
    for (i = 4; i <= n - 4; i += 4) {
      s0 = s0 + a[i] * b[i];
      s1 = s1 + a[i + 1] * b[i + 1];
      s2 = s2 + a[i + 2] * b[i + 2];
      s3 = s3 + a[i + 3] * b[i + 3];
    }
    res = (s0 + s2) + (s1 + s3);
  }
  int r = n - i;
  if (r == 3) {
    res += a[i] * b[i] + a[i + 1] * b[i + 1] + a[i + 2] * b[i + 2];
  } else if (r == 2) {
    res += a[i] * b[i] + a[i + 1] * b[i + 1];
  } else if (r == 1) {
    res += a[i] * b[i];
  }
  return res;
}

/* mju_cholFactor(mat, n, 0): in place, lower triangle. */
static void mj_chol_factor(double* mat, int n) {
  for (int j = 0; j < n; j++) {
    double tmp = mat[j * (n + 1)];
    if (j) tmp -= mj_dot(mat + j * n, mat + j * n, j);
    int deficient = tmp < 0.0;
    if (deficient) tmp = 0.0;
    mat[j * (n + 1)] = sqrt(tmp);
    if (deficient) {
      for (int i = j + 1; i < n; i++) mat[i * n + j] = 0;
    } else {
      tmp = 1 / mat[j * (n + 1)];
      for (int i = j + 1; i < n; i++) mat[i * n + j] = (mat[i * n + j] - mj_dot(mat + i * n, mat + j * n, j)) * tmp;
    }
  }
}

/* mju_cholSolve(res, mat, vec, n) with res != vec, as MuJoCo 4 orders it: forward by rows (mju_dot),
   backward by columns (each solved entry scaled into the ones above it, mju_addToScl). */
static void mj_chol_solve(double* res, const double* mat, const double* vec, int n) {
  memcpy(res, vec, n * sizeof(double));
  for (int i = 0; i < n; i++) {
    if (i) res[i] -= mj_dot(mat + i * n, res, i);
    res[i] /= mat[i * (n + 1)];
  }
  for (int i = n - 1; i >= 0; i--) {
    res[i] /= mat[i * (n + 1)];
    if (i && res[i] != 0) {
      double scl = -res[i];
      for (int j = 0; j < i; j++) res[j] += mat[i * n + j] * scl;
    }
  }
}

/* ------------------------------------------------------------------ quaternions, on doubles */

/* As skillcell's former float helpers (and mju_normalize4, mju_mat2Quat, mju_quat2Vel). */

static void quat_mul(double out[4], const double a[4], const double b[4]) {
  double r0 = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
  double r1 = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
  double r2 = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
  double r3 = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
  out[0] = r0, out[1] = r1, out[2] = r2, out[3] = r3;
}

static void quat_normalize(double q[4]) {
  double norm = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  if (norm < MINVAL) {
    q[0] = 1, q[1] = 0, q[2] = 0, q[3] = 0;
  } else if (fabs(norm - 1.0) > MINVAL) {
    double f = 1.0 / norm;
    q[0] *= f, q[1] *= f, q[2] *= f, q[3] *= f;
  }
}

static void quat_from_mat(double q[4], const double* m) {
  if (m[0] + m[4] + m[8] > 0) {
    double w = 0.5 * sqrt(1 + m[0] + m[4] + m[8]);
    q[0] = w, q[1] = 0.25 * (m[7] - m[5]) / w, q[2] = 0.25 * (m[2] - m[6]) / w, q[3] = 0.25 * (m[3] - m[1]) / w;
  } else if (m[0] > m[4] && m[0] > m[8]) {
    double x = 0.5 * sqrt(1 + m[0] - m[4] - m[8]);
    q[0] = 0.25 * (m[7] - m[5]) / x, q[1] = x, q[2] = 0.25 * (m[1] + m[3]) / x, q[3] = 0.25 * (m[2] + m[6]) / x;
  } else if (m[4] > m[8]) {
    double y = 0.5 * sqrt(1 - m[0] + m[4] - m[8]);
    q[0] = 0.25 * (m[2] - m[6]) / y, q[1] = 0.25 * (m[1] + m[3]) / y, q[2] = y, q[3] = 0.25 * (m[5] + m[7]) / y;
  } else {
    double z = 0.5 * sqrt(1 - m[0] - m[4] + m[8]);
    q[0] = 0.25 * (m[3] - m[1]) / z, q[1] = 0.25 * (m[2] + m[6]) / z, q[2] = 0.25 * (m[5] + m[7]) / z, q[3] = z;
  }
  quat_normalize(q);
}

static void quat_to_rotvec(double out[3], const double q[4]) {
  double x = q[1], y = q[2], z = q[3];
  double norm = sqrt(x * x + y * y + z * z);
  if (norm < MINVAL) {
    x = 1.0, y = 0.0, z = 0.0;
  } else {
    double f = 1.0 / norm;
    x = x * f, y = y * f, z = z * f;
  }
  double angle = 2 * atan2(norm, q[0]);
  if (angle > M_PI) angle -= 2 * M_PI;
  out[0] = x * angle, out[1] = y * angle, out[2] = z * angle;
}

static void quat_from_rotvec(double q[4], double x, double y, double z) {
  double angle = sqrt(x * x + y * y + z * z);
  if (angle < 1e-12) {
    q[0] = 1.0, q[1] = 0.0, q[2] = 0.0, q[3] = 0.0;
    return;
  }
  double s = sin(0.5 * angle) / angle;
  q[0] = cos(0.5 * angle), q[1] = s * x, q[2] = s * y, q[3] = s * z;
}

/* log(q_cmd q_tcp^-1) (rad, world frame), and q_tcp from the TCP's xmat. */
static void rotation_error(double e[3], double q_tcp[4], const double q_cmd[4], const double* xmat) {
  quat_from_mat(q_tcp, xmat);
  double conj[4] = {q_tcp[0], -q_tcp[1], -q_tcp[2], -q_tcp[3]}, diff[4];
  quat_mul(diff, q_cmd, conj);
  quat_to_rotvec(e, diff);
}

/* ------------------------------------------------------------------ Controller */

typedef struct {
  PyObject_HEAD
  Py_buffer xpos, xmat, qpos, ctrl, jac, p_cmd, q_cmd, error, dq;
  int bound;
  int nv, qpos_index[6], ctrl_index[6], dof_index[6];
  double max_translation, max_rotation, max_lead_translation, max_lead_rotation, ff_gain, damping;
  double ws_min[3], ws_max[3], ctrl_low[6], ctrl_high[6];
} Controller;

#define D(view) ((double*)(view).buf)

static void Controller_dealloc(Controller* self) {
  if (self->bound) {
    Py_buffer* views[] = {&self->xpos, &self->xmat, &self->qpos, &self->ctrl, &self->jac, &self->p_cmd,
                          &self->q_cmd, &self->error, &self->dq};
    for (size_t i = 0; i < sizeof(views) / sizeof(*views); i++) PyBuffer_Release(views[i]);
  }
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static int get_vector(PyObject* seq, double* out, Py_ssize_t n, const char* name) {
  PyObject* fast = PySequence_Fast(seq, name);
  if (!fast) return -1;
  if (PySequence_Fast_GET_SIZE(fast) != n) {
    PyErr_Format(PyExc_ValueError, "%s: needs %zd values, got %zd", name, n, PySequence_Fast_GET_SIZE(fast));
    Py_DECREF(fast);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
    if (out[i] == -1.0 && PyErr_Occurred()) {
      Py_DECREF(fast);
      return -1;
    }
  }
  Py_DECREF(fast);
  return 0;
}

static int Controller_init(Controller* self, PyObject* args, PyObject* kwargs) {
  static char* names[] = {"xpos", "xmat", "qpos", "ctrl", "jac", "p_cmd", "q_cmd", "error", "dq", "qpos_index",
                          "ctrl_index", "dof_index", "ctrl_low", "ctrl_high", "workspace_min", "workspace_max",
                          "max_translation", "max_rotation", "max_lead_translation", "max_lead_rotation",
                          "feedforward_gain", "damping", NULL};
  PyObject *xpos, *xmat, *qpos, *ctrl, *jac, *p_cmd, *q_cmd, *error, *dq, *qpos_index, *ctrl_index, *dof_index;
  PyObject *ctrl_low, *ctrl_high, *ws_min, *ws_max;
  if (self->bound) {
    PyErr_SetString(PyExc_RuntimeError, "Controller: already bound");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOOOOOOOOOOOOOdddddd", names, &xpos, &xmat, &qpos, &ctrl, &jac,
                                   &p_cmd, &q_cmd, &error, &dq, &qpos_index, &ctrl_index, &dof_index, &ctrl_low,
                                   &ctrl_high, &ws_min, &ws_max, &self->max_translation, &self->max_rotation,
                                   &self->max_lead_translation, &self->max_lead_rotation, &self->ff_gain,
                                   &self->damping))
    return -1;
  Py_buffer* views[] = {&self->xpos, &self->xmat, &self->qpos, &self->ctrl, &self->jac, &self->p_cmd,
                        &self->q_cmd, &self->error, &self->dq};
  PyObject* objs[] = {xpos, xmat, qpos, ctrl, jac, p_cmd, q_cmd, error, dq};
  const char* labels[] = {"xpos", "xmat", "qpos", "ctrl", "jac", "p_cmd", "q_cmd", "error", "dq"};
  Py_ssize_t sizes[] = {3, 9, 6, 6, 36, 3, 4, 6, 6};
  int writable[] = {0, 0, 0, 1, 0, 1, 1, 1, 1};
  size_t got = 0;
  for (; got < sizeof(views) / sizeof(*views); got++) {
    if (get_doubles(objs[got], views[got], sizes[got], writable[got], labels[got]) < 0) goto fail;
  }
  self->nv = (int)(self->jac.len / 8 / 6);
  if (get_indices(qpos_index, self->qpos_index, 6, self->qpos.len / 8, "qpos_index") < 0 ||
      get_indices(ctrl_index, self->ctrl_index, 6, self->ctrl.len / 8, "ctrl_index") < 0 ||
      get_indices(dof_index, self->dof_index, 6, self->nv, "dof_index") < 0 ||
      get_vector(ctrl_low, self->ctrl_low, 6, "ctrl_low") < 0 || get_vector(ctrl_high, self->ctrl_high, 6, "ctrl_high") < 0 ||
      get_vector(ws_min, self->ws_min, 3, "workspace_min") < 0 || get_vector(ws_max, self->ws_max, 3, "workspace_max") < 0)
    goto fail;
  self->bound = 1;
  return 0;
fail:
  for (size_t i = 0; i < got; i++) PyBuffer_Release(views[i]);
  return -1;
}

/* Writes joint targets that take the tool along the error buffer: damped least squares,
   u = clip(q + J^T (J J^T + damping I)^-1 e), with the Jacobian in `jac` (mj_jacSite's, 6 x nv). */
static void track(Controller* self) {
  const double* full = D(self->jac);
  double j[36], jjt[36], solved[6];
  for (int r = 0; r < 6; r++)
    for (int c = 0; c < 6; c++) j[r * 6 + c] = full[r * self->nv + self->dof_index[c]];
  for (int r = 0; r < 6; r++)
    for (int c = 0; c < 6; c++) jjt[r * 6 + c] = mj_dot(j + r * 6, j + c * 6, 6);
  for (int k = 0; k < 36; k++) jjt[k] = jjt[k] + (k % 7 == 0 ? self->damping : 0.0);  /* mju_addTo */
  mj_chol_factor(jjt, 6);
  mj_chol_solve(solved, jjt, D(self->error), 6);
  double* dq = D(self->dq);
  for (int c = 0; c < 6; c++) dq[c] = 0;
  for (int r = 0; r < 6; r++) {  /* mju_mulMatTVec */
    double v = solved[r];
    if (v)
      for (int c = 0; c < 6; c++) dq[c] += j[r * 6 + c] * v;
  }
  const double* qpos = D(self->qpos);
  double* ctrl = D(self->ctrl);
  for (int c = 0; c < 6; c++) {  /* clipped as np.clip clips (NaN stays NaN) */
    double x = qpos[self->qpos_index[c]] + dq[c], lo = self->ctrl_low[c], hi = self->ctrl_high[c];
    ctrl[self->ctrl_index[c]] = x < lo ? lo : x > hi ? hi : x;
  }
}

static PyObject* Controller_command(Controller* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "command(action, solve): two arguments");
    return NULL;
  }
  Py_buffer av;
  if (get_doubles(args[0], &av, 6, 0, "action") < 0) return NULL;
  const double* a = D(av);
  double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
  PyBuffer_Release(&av);
  int solve = PyObject_IsTrue(args[1]);
  if (solve < 0) return NULL;

  double* p_cmd = D(self->p_cmd);
  double* quat = D(self->q_cmd);
  const double* xpos = D(self->xpos);
  double bx = p_cmd[0], by = p_cmd[1], bz = p_cmd[2];
  double q_cmd[4] = {quat[0], quat[1], quat[2], quat[3]};
  double t = self->max_translation;
  const double *lo = self->ws_min, *hi = self->ws_max;
  double px = bx + t * a0, py = by + t * a1, pz = bz + t * a2;
  px = px < lo[0] ? lo[0] : px > hi[0] ? hi[0] : px;
  py = py < lo[1] ? lo[1] : py > hi[1] ? hi[1] : py;
  pz = pz < lo[2] ? lo[2] : pz > hi[2] ? hi[2] : pz;
  double r = self->max_rotation;
  double r0 = a3 * r, r1 = a4 * r, r2 = a5 * r;
  int rotated = r0 || r1 || r2;
  if (rotated) {
    double dq[4];
    quat_from_rotvec(dq, r0, r1, r2);
    quat_mul(q_cmd, dq, q_cmd);
    quat_normalize(q_cmd);
  }
  double tx = xpos[0], ty = xpos[1], tz = xpos[2];
  double ex = px - tx, ey = py - ty, ez = pz - tz, e[3], q_tcp[4];
  rotation_error(e, q_tcp, q_cmd, D(self->xmat));
  double e3 = e[0], e4 = e[1], e5 = e[2];
  double limit_p = self->max_lead_translation, limit_r = self->max_lead_rotation;
  double lead = sqrt(ex * ex + ey * ey + ez * ez);
  if (lead > limit_p) {
    double f = limit_p / lead;
    ex = ex * f, ey = ey * f, ez = ez * f;
    px = tx + ex, py = ty + ey, pz = tz + ez;
  }
  lead = sqrt(e3 * e3 + e4 * e4 + e5 * e5);
  if (lead > limit_r) {
    double f = limit_r / lead, dq[4];
    e3 = e3 * f, e4 = e4 * f, e5 = e5 * f;
    quat_from_rotvec(dq, e3, e4, e5);
    quat_mul(q_cmd, dq, q_tcp);
    rotated = 1;
  }
  if (rotated) quat[0] = q_cmd[0], quat[1] = q_cmd[1], quat[2] = q_cmd[2], quat[3] = q_cmd[3];
  p_cmd[0] = px, p_cmd[1] = py, p_cmd[2] = pz;

  double gain = self->ff_gain;
  ex = ex + gain * (px - bx), ey = ey + gain * (py - by), ez = ez + gain * (pz - bz);
  e3 = e3 + gain * r0, e4 = e4 + gain * r1, e5 = e5 + gain * r2;
  double norm = sqrt(ex * ex + ey * ey + ez * ez);
  if (norm > limit_p) {
    double f = limit_p / norm;
    ex = ex * f, ey = ey * f, ez = ez * f;
  }
  norm = sqrt(e3 * e3 + e4 * e4 + e5 * e5);
  if (norm > limit_r) {
    double f = limit_r / norm;
    e3 = e3 * f, e4 = e4 * f, e5 = e5 * f;
  }
  double* error = D(self->error);
  error[0] = ex, error[1] = ey, error[2] = ez, error[3] = e3, error[4] = e4, error[5] = e5;
  if (solve) track(self);
  Py_RETURN_NONE;
}

static PyObject* Controller_track(Controller* self, PyObject* unused) {
  (void)unused;
  track(self);
  Py_RETURN_NONE;
}

/* [p_cmd - p_tcp, log(q_cmd q_tcp^-1)] into out[0:6]. */
static void pose_error(Controller* self, double* out) {
  const double *p = D(self->p_cmd), *x = D(self->xpos);
  double e[3], q_tcp[4];
  rotation_error(e, q_tcp, D(self->q_cmd), D(self->xmat));
  out[0] = p[0] - x[0], out[1] = p[1] - x[1], out[2] = p[2] - x[2], out[3] = e[0], out[4] = e[1], out[5] = e[2];
}

static PyObject* Controller_pose_error(Controller* self, PyObject* out) {
  Py_buffer view;
  if (get_doubles(out, &view, 6, 1, "out") < 0) return NULL;
  pose_error(self, D(view));
  PyBuffer_Release(&view);
  Py_RETURN_NONE;
}

static PyMethodDef Controller_methods[] = {
    {"command", (PyCFunction)(void (*)(void))Controller_command, METH_FASTCALL,
     "command(action, solve): moves the commanded pose by action[:6] (normalized), writes the lead-limited "
     "pose error plus feed-forward into `error`, and with `solve` the joint targets into `ctrl` (needs `jac`)."},
    {"track", (PyCFunction)Controller_track, METH_NOARGS,
     "track(): joint targets from `error` and `jac` into `ctrl`, by damped least squares."},
    {"pose_error", (PyCFunction)Controller_pose_error, METH_O,
     "pose_error(out): [p_cmd - p_tcp, log(q_cmd q_tcp^-1)] (world frame) into out[:6]."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ControllerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "skillcell.envs.kernels.Controller",
    .tp_basicsize = sizeof(Controller),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The Cartesian controller's per-step arithmetic, bound to its buffers (envs/control.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Controller_init,
    .tp_dealloc = (destructor)Controller_dealloc,
    .tp_methods = Controller_methods,
};

/* ------------------------------------------------------------------ Observer */

typedef struct {
  PyObject_HEAD
  Py_buffer raw, scale, qpos, qvel, wrench, ft_offset, ft_xmat, payload_force, payload_com, force, torque, warnings;
  int bound;
  Controller* controller;
  PyObject *empty, *shape, *dtype; /* numpy.empty, the observation's size and float32 */
  Py_ssize_t size;
  int joint_pos, joint_vel, lead, ft, qpos_index[6], qvel_index[6];
} Observer;

static void Observer_dealloc(Observer* self) {
  if (self->bound) {
    Py_buffer* views[] = {&self->raw, &self->scale, &self->qpos, &self->qvel, &self->wrench, &self->ft_offset,
                          &self->ft_xmat, &self->payload_force, &self->payload_com, &self->force, &self->torque,
                          &self->warnings};
    for (size_t i = 0; i < sizeof(views) / sizeof(*views); i++) PyBuffer_Release(views[i]);
  }
  Py_XDECREF(self->controller);
  Py_XDECREF(self->empty);
  Py_XDECREF(self->shape);
  Py_XDECREF(self->dtype);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static int Observer_init(Observer* self, PyObject* args, PyObject* kwargs) {
  static char* names[] = {"raw", "scale", "qpos", "qvel", "qpos_index", "qvel_index", "wrench", "ft_offset",
                          "ft_xmat", "payload_force", "payload_com", "force", "torque", "controller",
                          "joint_pos", "joint_vel", "lead", "ft", "empty", "dtype", "warnings", NULL};
  PyObject *raw, *scale, *qpos, *qvel, *qpos_index, *qvel_index, *wrench, *ft_offset, *ft_xmat, *payload_force;
  PyObject *payload_com, *force, *torque, *controller, *empty, *dtype, *warnings;
  if (self->bound) {
    PyErr_SetString(PyExc_RuntimeError, "Observer: already bound");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOOOOOOOOOOO!iiiiOOO", names, &raw, &scale, &qpos, &qvel,
                                   &qpos_index, &qvel_index, &wrench, &ft_offset, &ft_xmat, &payload_force,
                                   &payload_com, &force, &torque, &ControllerType, &controller, &self->joint_pos,
                                   &self->joint_vel, &self->lead, &self->ft, &empty, &dtype, &warnings))
    return -1;
  Py_buffer* views[] = {&self->raw, &self->scale, &self->qpos, &self->qvel, &self->wrench, &self->ft_offset,
                        &self->ft_xmat, &self->payload_force, &self->payload_com, &self->force, &self->torque};
  PyObject* objs[] = {raw, scale, qpos, qvel, wrench, ft_offset, ft_xmat, payload_force, payload_com, force, torque};
  const char* labels[] = {"raw", "scale", "qpos", "qvel", "wrench", "ft_offset", "ft_xmat", "payload_force",
                          "payload_com", "force", "torque"};
  Py_ssize_t sizes[] = {1, 1, 6, 6, 6, 6, 9, 3, 3, 3, 3};
  int writable[] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t got = 0;
  for (; got < sizeof(views) / sizeof(*views); got++) {
    if (get_doubles(objs[got], views[got], sizes[got], writable[got], labels[got]) < 0) goto fail;
  }
  self->size = self->raw.len / 8;
  if (self->scale.len != self->raw.len) {
    PyErr_SetString(PyExc_ValueError, "scale: needs one value per observation entry");
    goto fail;
  }
  int starts[] = {self->joint_pos, self->joint_vel, self->lead, self->ft};
  for (int i = 0; i < 4; i++) {
    if (starts[i] < 0 || starts[i] + 6 > self->size) {
      PyErr_Format(PyExc_ValueError, "block at %d: six entries do not fit an observation of %zd", starts[i], self->size);
      goto fail;
    }
  }
  if (get_indices(qpos_index, self->qpos_index, 6, self->qpos.len / 8, "qpos_index") < 0 ||
      get_indices(qvel_index, self->qvel_index, 6, self->qvel.len / 8, "qvel_index") < 0)
    goto fail;
  /* mjData.warning.number is a strided view (a field of the mjWarningStat records) */
  if (PyObject_GetBuffer(warnings, &self->warnings, PyBUF_STRIDES | PyBUF_FORMAT) < 0) goto fail;
  const char* wf = self->warnings.format ? self->warnings.format : "B";
  if (self->warnings.itemsize != 4 || self->warnings.ndim != 1 ||
      (strcmp(wf, "i") != 0 && strcmp(wf, "<i") != 0 && strcmp(wf, "=i") != 0)) {
    PyBuffer_Release(&self->warnings);
    PyErr_SetString(PyExc_TypeError, "warnings: needs int32 counts (mjData.warning.number)");
    goto fail;
  }
  self->shape = PyLong_FromSsize_t(self->size);
  if (!self->shape) {
    PyBuffer_Release(&self->warnings);
    goto fail;
  }
  Py_INCREF(controller), Py_INCREF(empty), Py_INCREF(dtype);
  self->controller = (Controller*)controller, self->empty = empty, self->dtype = dtype;
  self->bound = 1;
  return 0;
fail:
  for (size_t i = 0; i < got; i++) PyBuffer_Release(views[i]);
  return -1;
}

/* The F/T reading minus the tool's weight (CellEnv._update_wrench): f = f_s + R^T m g,
   tau = tau_s + c x R^T m g, in the F/T frame. */
static PyObject* Observer_wrench(Observer* self, PyObject* unused) {
  (void)unused;
  const double *R = D(self->ft_xmat), *w = D(self->payload_force), *c = D(self->payload_com);
  const double *f = D(self->force), *t = D(self->torque);
  double gx = R[0] * w[0] + R[3] * w[1] + R[6] * w[2];
  double gy = R[1] * w[0] + R[4] * w[1] + R[7] * w[2];
  double gz = R[2] * w[0] + R[5] * w[1] + R[8] * w[2];
  double* out = D(self->wrench);
  out[0] = f[0] + gx, out[1] = f[1] + gy, out[2] = f[2] + gz;
  out[3] = t[0] + (c[1] * gz - c[2] * gy), out[4] = t[1] + (c[2] * gx - c[0] * gz), out[5] = t[2] + (c[0] * gy - c[1] * gx);
  Py_RETURN_NONE;
}

/* observe(noise_index, noise): the observation as float32, raw * scale, after writing the shared
   blocks into raw (joints, the command's lead, the F/T reading plus the tier's offset) and adding
   noise[k] at raw[noise_index[k]] (both None without noise). The cell's blocks are in raw already. */
static PyObject* Observer_observe(Observer* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "observe(noise_index, noise): two arguments");
    return NULL;
  }
  double* raw = D(self->raw);
  const double *qpos = D(self->qpos), *qvel = D(self->qvel), *wrench = D(self->wrench), *offset = D(self->ft_offset);
  for (int i = 0; i < 6; i++) {
    raw[self->joint_pos + i] = qpos[self->qpos_index[i]];
    raw[self->joint_vel + i] = qvel[self->qvel_index[i]];
  }
  pose_error(self->controller, raw + self->lead);
  for (int i = 0; i < 6; i++) raw[self->ft + i] = wrench[i] + offset[i];
  if (args[1] != Py_None) {
    Py_buffer noise, index;
    if (get_doubles(args[1], &noise, 0, 0, "noise") < 0) return NULL;
    if (PyObject_GetBuffer(args[0], &index, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
      PyBuffer_Release(&noise);
      return NULL;
    }
    Py_ssize_t n = noise.len / 8;
    const char* f = index.format ? index.format : "B";
    int ok = index.itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "<q") == 0 || strcmp(f, "l") == 0 ||
                                      strcmp(f, "<l") == 0) && index.len / 8 == n;
    const long long* idx = (const long long*)index.buf;
    for (Py_ssize_t k = 0; ok && k < n; k++) ok = idx[k] >= 0 && idx[k] < self->size;
    if (ok)
      for (Py_ssize_t k = 0; k < n; k++) raw[idx[k]] = raw[idx[k]] + D(noise)[k];
    PyBuffer_Release(&noise);
    PyBuffer_Release(&index);
    if (!ok) {
      PyErr_SetString(PyExc_ValueError, "noise_index: needs one int64 index per noise value, inside the observation");
      return NULL;
    }
  }
  PyObject* call_args[] = {self->shape, self->dtype};
  PyObject* obs = PyObject_Vectorcall(self->empty, call_args, 2, NULL);
  if (!obs) return NULL;
  Py_buffer out;
  if (PyObject_GetBuffer(obs, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
    Py_DECREF(obs);
    return NULL;
  }
  if (out.itemsize != 4 || out.len / 4 != self->size) {
    PyBuffer_Release(&out);
    Py_DECREF(obs);
    PyErr_SetString(PyExc_TypeError, "empty: must make a float32 array of the observation's size");
    return NULL;
  }
  float* o = (float*)out.buf;
  const double* scale = D(self->scale);
  for (Py_ssize_t i = 0; i < self->size; i++) o[i] = (float)(raw[i] * scale[i]);
  PyBuffer_Release(&out);
  return obs;
}

/* sound(): no MuJoCo warning counted, and every qpos and qvel finite. */
static PyObject* Observer_sound(Observer* self, PyObject* unused) {
  (void)unused;
  const char* counts = (const char*)self->warnings.buf;
  for (Py_ssize_t i = 0; i < self->warnings.shape[0]; i++)
    if (*(const int*)(counts + i * self->warnings.strides[0])) Py_RETURN_FALSE;
  const double *q = D(self->qpos), *v = D(self->qvel);
  for (Py_ssize_t i = 0; i < self->qpos.len / 8; i++)
    if (!isfinite(q[i])) Py_RETURN_FALSE;
  for (Py_ssize_t i = 0; i < self->qvel.len / 8; i++)
    if (!isfinite(v[i])) Py_RETURN_FALSE;
  Py_RETURN_TRUE;
}

static PyMethodDef Observer_methods[] = {
    {"sound", (PyCFunction)Observer_sound, METH_NOARGS,
     "sound(): True while MuJoCo counts no warning and the state (qpos, qvel) is finite."},
    {"wrench", (PyCFunction)Observer_wrench, METH_NOARGS,
     "wrench(): the F/T reading minus the tool's weight into `wrench` (F/T frame)."},
    {"observe", (PyCFunction)(void (*)(void))Observer_observe, METH_FASTCALL,
     "observe(noise_index, noise): the shared blocks into `raw`, noise added, raw * scale as a new float32 array."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ObserverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "skillcell.envs.kernels.Observer",
    .tp_basicsize = sizeof(Observer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CellEnv's F/T compensation and observation, bound to their buffers (envs/base.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Observer_init,
    .tp_dealloc = (destructor)Observer_dealloc,
    .tp_methods = Observer_methods,
};

/* ------------------------------------------------------------------ Seam */

/* The seam geometry of skillcell.envs.weld.WeldMetrics: the sampled seam in the world (points,
   tangents, the base plate normal; rewritten in place at each reset), its arc lengths and piece
   lengths, the seam frame and point of the last measure, and the CTWD ray's direction. */
typedef struct {
  PyObject_HEAD
  Py_buffer points, tangents, normal, s, lengths, frame, point, ray;
  int bound, n, behind, ahead;
  double length;
} Seam;

static void Seam_dealloc(Seam* self) {
  if (self->bound) {
    Py_buffer* views[] = {&self->points, &self->tangents, &self->normal, &self->s, &self->lengths, &self->frame,
                          &self->point, &self->ray};
    for (size_t i = 0; i < sizeof(views) / sizeof(*views); i++) PyBuffer_Release(views[i]);
  }
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static int Seam_init(Seam* self, PyObject* args, PyObject* kwargs) {
  static char* names[] = {"points", "tangents", "normal", "s", "lengths", "frame", "point", "ray", "behind", "ahead",
                          NULL};
  PyObject *points, *tangents, *normal, *s, *lengths, *frame, *point, *ray;
  if (self->bound) {
    PyErr_SetString(PyExc_RuntimeError, "Seam: already bound");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOOOOOii", names, &points, &tangents, &normal, &s, &lengths,
                                   &frame, &point, &ray, &self->behind, &self->ahead))
    return -1;
  Py_buffer* views[] = {&self->s, &self->points, &self->tangents, &self->normal, &self->lengths, &self->frame,
                        &self->point, &self->ray};
  PyObject* objs[] = {s, points, tangents, normal, lengths, frame, point, ray};
  const char* labels[] = {"s", "points", "tangents", "normal", "lengths", "frame", "point", "ray"};
  int writable[] = {0, 0, 0, 0, 0, 1, 1, 1};
  size_t got = 0;
  for (; got < sizeof(views) / sizeof(*views); got++) {
    Py_ssize_t n = got == 0 ? 2 : self->s.len / 8;
    Py_ssize_t sizes[] = {2, 3 * n, 3 * n, 3, n - 1, 9, 3, 3};
    if (get_doubles(objs[got], views[got], sizes[got], writable[got], labels[got]) < 0) goto fail;
  }
  self->n = (int)(self->s.len / 8);
  self->length = D(self->s)[self->n - 1];
  self->bound = 1;
  return 0;
fail:
  for (size_t i = 0; i < got; i++) PyBuffer_Release(views[i]);
  return -1;
}

/* bisect.bisect_right(s, x) - 1, at most the last piece: the piece of s clamped to the seam; u along it. */
static int seam_piece(Seam* self, double x, double* u) {
  const double* s = D(self->s);
  if (x < 0.0)
    x = 0.0;
  else if (x > self->length)
    x = self->length;
  int lo = 0, hi = self->n;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (x < s[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  int k = lo - 1;
  if (k > self->n - 2) k = self->n - 2;
  *u = (x - s[k]) / D(self->lengths)[k];
  return k;
}

static int get_floats(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t n, double* out, const char* name) {
  if (nargs != n) {
    PyErr_Format(PyExc_TypeError, "%s: needs %zd arguments, got %zd", name, n, nargs);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    out[i] = PyFloat_AsDouble(args[i]);
    if (out[i] == -1.0 && PyErr_Occurred()) return -1;
  }
  return 0;
}

/* locate(x, y, z, k0, end) -> (k, s): the first sample nearest the point (squared distances summed
   as numpy sums them, np.argmin's tie and NaN rules) among the search window around sample k0, or
   among the first `end` samples where k0 < 0; then the arc length of the nearest point on the pieces
   either side of it, where one is nearer than the sample. */
static int seam_locate(Seam* self, double px, double py, double pz, long k0, long end, long* k_out, double* s_out) {
  const double *pts = D(self->points), *s = D(self->s);
  long lo, hi;
  if (k0 >= 0) {
    lo = k0 - self->behind > 0 ? k0 - self->behind : 0;
    hi = k0 + self->ahead < self->n ? k0 + self->ahead : self->n;
  } else {
    lo = 0, hi = end < self->n ? end : self->n;
  }
  if (k0 >= self->n || lo >= hi) {
    PyErr_SetString(PyExc_ValueError, "locate: the search window is empty");
    return -1;
  }
  long best_k = lo;
  double best_d2 = 0;
  for (long k = lo; k < hi; k++) {
    double dx = pts[3 * k] - px, dy = pts[3 * k + 1] - py, dz = pts[3 * k + 2] - pz;
    double d2 = dx * dx + dy * dy + dz * dz;
    if (k == lo || d2 < best_d2 || isnan(d2)) {
      best_k = k, best_d2 = d2;
      if (isnan(d2)) break;
    }
  }
  double best_s = s[best_k];
  for (long i = best_k - 1; i <= best_k; i++) {
    if (i < 0 || i > self->n - 2) continue;
    const double *a = pts + 3 * i, *b = pts + 3 * i + 3;
    double sx = b[0] - a[0], sy = b[1] - a[1], sz = b[2] - a[2];
    double length2 = sx * sx + sy * sy + sz * sz;
    double u = ((px - a[0]) * sx + (py - a[1]) * sy + (pz - a[2]) * sz) / length2;
    u = u < 0.0 ? 0.0 : u > 1.0 ? 1.0 : u;
    double dx = px - (a[0] + u * sx), dy = py - (a[1] + u * sy), dz = pz - (a[2] + u * sz);
    double dist2 = dx * dx + dy * dy + dz * dz;
    if (dist2 < best_d2) best_d2 = dist2, best_s = s[i] + u * (s[i + 1] - s[i]);
  }
  *k_out = best_k, *s_out = best_s;
  return 0;
}

static PyObject* Seam_locate(Seam* self, PyObject* const* args, Py_ssize_t nargs) {
  double v[3], s;
  long k;
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "locate(x, y, z, k0, end): five arguments");
    return NULL;
  }
  if (get_floats(args, 3, 3, v, "locate") < 0) return NULL;
  long k0 = PyLong_AsLong(args[3]), end = PyLong_AsLong(args[4]);
  if ((k0 == -1 || end == -1) && PyErr_Occurred()) return NULL;
  if (seam_locate(self, v[0], v[1], v[2], k0, end, &k, &s) < 0) return NULL;
  return Py_BuildValue("(ld)", k, s);
}

/* frame(s) -> (px, py, pz, tx, ty, tz, lx, ly, lz): the seam point, the travel direction (tangents
   interpolated, normalized) and left (n x t) at arc length s. */
static void seam_frame(Seam* self, double x, double f[9]) {
  double u;
  int k = seam_piece(self, x, &u);
  const double *a = D(self->points) + 3 * k, *b = a + 3;
  const double *t0 = D(self->tangents) + 3 * k, *t1 = t0 + 3, *n = D(self->normal);
  double tx = t0[0] + u * (t1[0] - t0[0]), ty = t0[1] + u * (t1[1] - t0[1]), tz = t0[2] + u * (t1[2] - t0[2]);
  double norm = sqrt(tx * tx + ty * ty + tz * tz);
  tx = tx / norm, ty = ty / norm, tz = tz / norm;
  f[0] = a[0] + u * (b[0] - a[0]), f[1] = a[1] + u * (b[1] - a[1]), f[2] = a[2] + u * (b[2] - a[2]);
  f[3] = tx, f[4] = ty, f[5] = tz;
  f[6] = n[1] * tz - n[2] * ty, f[7] = n[2] * tx - n[0] * tz, f[8] = n[0] * ty - n[1] * tx;
}

static PyObject* Seam_frame(Seam* self, PyObject* arg) {
  double x = PyFloat_AsDouble(arg), f[9];
  if (x == -1.0 && PyErr_Occurred()) return NULL;
  seam_frame(self, x, f);
  return Py_BuildValue("(ddddddddd)", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
}

/* pose(p_tcp, xmat, ctwd, k0, end, fresh) -> (k, s, aim xyz, axis xyz, left xyz, lateral, vertical, along,
   work, travel, facing, plane, changed): WeldMetrics.measure's
   geometry for a TCP pose, everything but the CTWD ray cast. The aim point is the wire tip at `ctwd`
   along the torch axis (the TCP's z); `locate` finds it on the seam (k0, end as there) and `frame` gives
   the seam frame there, written into `point` and, where it differs from the last one (or `fresh`), into
   `frame` row by row (`changed`); the aim's offset from the seam point in that frame (along, lateral,
   vertical), the work and travel angles (deg), the torch axis into `ray` and its component along the
   plate normal (`facing`), and the distance along the axis to the base plate's plane through the seam
   point (`plane`, inf where the torch does not face it). */
static PyObject* Seam_pose(Seam* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 6) {
    PyErr_SetString(PyExc_TypeError, "pose(p_tcp, xmat, ctwd, k0, end, fresh): six arguments");
    return NULL;
  }
  Py_buffer pv, rv;
  if (get_doubles(args[0], &pv, 3, 0, "p_tcp") < 0) return NULL;
  if (get_doubles(args[1], &rv, 9, 0, "xmat") < 0) {
    PyBuffer_Release(&pv);
    return NULL;
  }
  double px = D(pv)[0], py = D(pv)[1], pz = D(pv)[2];
  double ax = D(rv)[2], ay = D(rv)[5], az = D(rv)[8];
  PyBuffer_Release(&pv);
  PyBuffer_Release(&rv);
  double c = PyFloat_AsDouble(args[2]);
  long k0 = PyLong_AsLong(args[3]), end = PyLong_AsLong(args[4]);
  int fresh = PyObject_IsTrue(args[5]);
  if (((c == -1.0 || k0 == -1 || end == -1) && PyErr_Occurred()) || fresh < 0) return NULL;
  double aim_x = px + c * ax, aim_y = py + c * ay, aim_z = pz + c * az, s, f[9];
  long k;
  if (seam_locate(self, aim_x, aim_y, aim_z, k0, end, &k, &s) < 0) return NULL;
  seam_frame(self, s, f);
  double sx = f[0], sy = f[1], sz = f[2], tx = f[3], ty = f[4], tz = f[5], yx = f[6], yy = f[7], yz = f[8];
  const double* n = D(self->normal);
  double n0 = n[0], n1 = n[1], n2 = n[2];
  double* point = D(self->point);
  point[0] = sx, point[1] = sy, point[2] = sz;
  double rows[9] = {tx, yx, n0, ty, yy, n1, tz, yz, n2};
  double* frame = D(self->frame);
  int changed = fresh;
  for (int i = 0; i < 9 && !changed; i++) changed = rows[i] != frame[i];
  if (changed) memcpy(frame, rows, sizeof(rows));
  double ox = aim_x - sx, oy = aim_y - sy, oz = aim_z - sz;
  double lateral = ox * yx + oy * yy + oz * yz;
  double vertical = ox * n0 + oy * n1 + oz * n2;
  double along = ox * tx + oy * ty + oz * tz;
  double bx = -ax, by = -ay, bz = -az;
  double work = 90.0 - atan2(bx * -yx + by * -yy + bz * -yz, bx * n0 + by * n1 + bz * n2) * (180.0 / M_PI);
  double sine = ax * tx + ay * ty + az * tz;
  sine = sine < 1.0 ? sine : 1.0;  /* max(-1, min(1, x)) as the builtins compare: a NaN gives 1 */
  sine = sine > -1.0 ? sine : -1.0;
  double travel = asin(sine) * (180.0 / M_PI);
  double* ray = D(self->ray);
  ray[0] = ax, ray[1] = ay, ray[2] = az;
  double facing = ax * n0 + ay * n1 + az * n2;
  double plane = facing < -1e-6 ? ((sx - px) * n0 + (sy - py) * n1 + (sz - pz) * n2) / facing : INFINITY;
  return Py_BuildValue("(ldddddddddddddddddO)", k, s, aim_x, aim_y, aim_z, ax, ay, az, yx, yy, yz, lateral, vertical,
                       along, work, travel, facing, plane, changed ? Py_True : Py_False);
}

/* ahead(s, x, y, z, d0, d1, ...) -> list: the seam points d_i ahead of arc length s (clamped to the
   seam), from the point (x, y, z), in the seam frame (`frame`, row by row), flattened. */
static PyObject* Seam_ahead(Seam* self, PyObject* const* args, Py_ssize_t nargs) {
  double v[4];
  if (nargs < 4) {
    PyErr_SetString(PyExc_TypeError, "ahead(s, x, y, z, *distances)");
    return NULL;
  }
  if (get_floats(args, 4, 4, v, "ahead") < 0) return NULL;
  const double* r = D(self->frame);
  PyObject* out = PyList_New(3 * (nargs - 4));
  if (!out) return NULL;
  for (Py_ssize_t i = 4; i < nargs; i++) {
    double d = PyFloat_AsDouble(args[i]), u;
    if (d == -1.0 && PyErr_Occurred()) {
      Py_DECREF(out);
      return NULL;
    }
    int k = seam_piece(self, v[0] + d, &u);
    const double *a = D(self->points) + 3 * k, *b = a + 3;
    double x = a[0] + u * (b[0] - a[0]) - v[1], y = a[1] + u * (b[1] - a[1]) - v[2], z = a[2] + u * (b[2] - a[2]) - v[3];
    double e[3] = {r[0] * x + r[3] * y + r[6] * z, r[1] * x + r[4] * y + r[7] * z, r[2] * x + r[5] * y + r[8] * z};
    for (int j = 0; j < 3; j++) {
      PyObject* f = PyFloat_FromDouble(e[j]);
      if (!f) {
        Py_DECREF(out);
        return NULL;
      }
      PyList_SET_ITEM(out, 3 * (i - 4) + j, f);
    }
  }
  return out;
}

static PyMethodDef Seam_methods[] = {
    {"locate", (PyCFunction)(void (*)(void))Seam_locate, METH_FASTCALL,
     "locate(x, y, z, k0, end) -> (k, s): the nearest sample in the window around k0 (the first `end` samples "
     "where k0 < 0), and the arc length of the nearest point on the pieces beside it."},
    {"frame", (PyCFunction)Seam_frame, METH_O,
     "frame(s) -> (point, travel direction, left) at arc length s, as nine floats."},
    {"pose", (PyCFunction)(void (*)(void))Seam_pose, METH_FASTCALL,
     "pose(p_tcp, xmat, ctwd, k0, end, fresh) -> the geometry of WeldMetrics.measure but the ray cast."},
    {"ahead", (PyCFunction)(void (*)(void))Seam_ahead, METH_FASTCALL,
     "ahead(s, x, y, z, *distances) -> list: the seam points ahead of s from (x, y, z), in the seam frame."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject SeamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "skillcell.envs.kernels.Seam",
    .tp_basicsize = sizeof(Seam),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A weld seam's geometry per step, bound to WeldMetrics' buffers (envs/weld.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Seam_init,
    .tp_dealloc = (destructor)Seam_dealloc,
    .tp_methods = Seam_methods,
};

/* relative_rotvec(w, x, y, z, xmat) -> (rx, ry, rz): log(q q_mat), q_mat the quaternion of a rotation
   matrix given row by row (a site's xmat), as the float helpers compute it. */
static PyObject* relative_rotvec(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  (void)module;
  double ref[4], q_mat[4], q[4], v[3];
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "relative_rotvec(w, x, y, z, xmat): five arguments");
    return NULL;
  }
  if (get_floats(args, 4, 4, ref, "relative_rotvec") < 0) return NULL;
  Py_buffer xmat;
  if (get_doubles(args[4], &xmat, 9, 0, "xmat") < 0) return NULL;
  quat_from_mat(q_mat, D(xmat));
  PyBuffer_Release(&xmat);
  quat_mul(q, ref, q_mat);
  quat_to_rotvec(v, q);
  return Py_BuildValue("(ddd)", v[0], v[1], v[2]);
}

/* quat_of(xmat) -> (w, x, y, z): the unit quaternion of a rotation matrix given row by row (mju_mat2Quat's bits). */
static PyObject* quat_of(PyObject* module, PyObject* arg) {
  (void)module;
  Py_buffer view;
  double q[4];
  if (get_doubles(arg, &view, 9, 0, "xmat") < 0) return NULL;
  quat_from_mat(q, D(view));
  PyBuffer_Release(&view);
  return Py_BuildValue("(dddd)", q[0], q[1], q[2], q[3]);
}

/* rotvec(w, x, y, z) -> (rx, ry, rz): the rotation vector of a unit quaternion (mju_quat2Vel's bits, dt 1). */
static PyObject* rotvec(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  (void)module;
  double q[4], v[3];
  if (get_floats(args, nargs, 4, q, "rotvec") < 0) return NULL;
  quat_to_rotvec(v, q);
  return Py_BuildValue("(ddd)", v[0], v[1], v[2]);
}

static PyMethodDef module_methods[] = {
    {"relative_rotvec", (PyCFunction)(void (*)(void))relative_rotvec, METH_FASTCALL,
     "relative_rotvec(w, x, y, z, xmat) -> (rx, ry, rz): the rotation vector of q q_mat."},
    {"quat_of", (PyCFunction)quat_of, METH_O,
     "quat_of(xmat) -> (w, x, y, z): the unit quaternion of a rotation matrix given row by row."},
    {"rotvec", (PyCFunction)(void (*)(void))rotvec, METH_FASTCALL,
     "rotvec(w, x, y, z) -> (rx, ry, rz): the rotation vector of a unit quaternion, angle in [-pi, pi]."},
    {NULL, NULL, 0, NULL}};

/* ------------------------------------------------------------------ module */

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "kernels", "CellEnv's per-step arithmetic, compiled.", -1,
                                    module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_kernels(void) {
  if (PyType_Ready(&ControllerType) < 0 || PyType_Ready(&ObserverType) < 0 || PyType_Ready(&SeamType) < 0)
    return NULL;
  PyObject* m = PyModule_Create(&module);
  if (!m) return NULL;
  Py_INCREF(&ControllerType);
  Py_INCREF(&ObserverType);
  Py_INCREF(&SeamType);
  if (PyModule_AddObject(m, "Controller", (PyObject*)&ControllerType) < 0 ||
      PyModule_AddObject(m, "Observer", (PyObject*)&ObserverType) < 0 ||
      PyModule_AddObject(m, "Seam", (PyObject*)&SeamType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
