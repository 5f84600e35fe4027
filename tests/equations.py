"""An independent, hand-written transcription of the equations (REFERENCE.md §1-3).

Nothing here imports the library: each update rule is written out again, explicitly per
method, so the tests compare the library against the paper, not against itself.
Row-major code (h of shape (B, N)); the column-convention matrices act as ``h @ X.T``.
"""

import torch


def S(M, beta, gamma):
    """(1 - beta)(M + M^T) + beta (M - M^T) - gamma I."""
    n = M.shape[0]
    return (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * torch.eye(n, dtype=M.dtype)


def lipschitz_f(h, x, A, W, U, b, alpha=1.0, Ug=None, bg=None):
    z = h @ W.T
    f = alpha * (h @ A.T) + torch.tanh(z + x @ U.T + b)
    if Ug is not None:
        f = f * torch.sigmoid(z + x @ Ug.T + bg)
    return f


def asr_f(h, x, W, U, b, Ug=None, bg=None):
    z = h @ W.T
    f = torch.tanh(z + x @ U.T + b)
    if Ug is not None:
        f = torch.sigmoid(z + x @ Ug.T + bg) * f
    return f


def rk_step(method, f, h, eps):
    if method == "euler":
        return h + eps * f(h)
    if method in ("midpoint", "rk2"):
        k1 = f(h)
        return h + eps * f(h + eps / 2 * k1)
    if method == "heun":
        k1 = f(h)
        k2 = f(h + eps * k1)
        return h + eps / 2 * (k1 + k2)
    if method == "rk4":
        k1 = f(h)
        k2 = f(h + eps / 2 * k1)
        k3 = f(h + eps / 2 * k2)
        k4 = f(h + eps * k3)
        return h + eps / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(method)


def run_lipschitz(x, A, W, U, b, eps, method="euler", alpha=1.0, h0=None, Ug=None, bg=None, dt=None):
    """x: (T, B, p) -> all states (T, B, N). dt: None, (T,) or (B, T)."""
    T, B, _ = x.shape
    h = torch.zeros(B, A.shape[0], dtype=x.dtype) if h0 is None else h0
    out = []
    for t in range(T):
        step = eps if dt is None else eps * (dt[t] if dt.dim() == 1 else dt[:, t : t + 1])
        h = rk_step(method, lambda y, t=t: lipschitz_f(y, x[t], A, W, U, b, alpha, Ug, bg), h, step)
        out.append(h)
    return torch.stack(out)


def run_asr(x, W, U, b, eps, h0=None, Ug=None, bg=None):
    T, B, _ = x.shape
    h = torch.zeros(B, W.shape[0], dtype=x.dtype) if h0 is None else h0
    out = []
    for t in range(T):
        h = h + eps * asr_f(h, x[t], W, U, b, Ug, bg)
        out.append(h)
    return torch.stack(out)


def run_cornn(x, W, Wz, U, b, dt, gamma, damping):
    T, B, _ = x.shape
    n = W.shape[0]
    y = torch.zeros(B, n, dtype=x.dtype)
    z = torch.zeros(B, n, dtype=x.dtype)
    ys, zs = [], []
    for t in range(T):
        z = z + dt * (torch.tanh(y @ W.T + z @ Wz.T + x[t] @ U.T + b) - gamma * y - damping * z)
        y = y + dt * z
        ys.append(y)
        zs.append(z)
    return torch.stack(ys), torch.stack(zs)


def reference_code_forward(sd, x_bt, eps, beta, gamma, solver="euler", alpha=1.0):
    """The authors' reference model in its own row convention: h @ A, batch-first input."""
    B_, C_ = sd["B"], sd["C"]
    n = B_.shape[0]
    I = torch.eye(n, dtype=B_.dtype)
    A = beta * (B_ - B_.T) + (1 - beta) * (B_ + B_.T) - gamma * I
    W = beta * (C_ - C_.T) + (1 - beta) * (C_ + C_.T) - gamma * I
    h = torch.zeros(x_bt.shape[0], n, dtype=x_bt.dtype)
    for i in range(x_bt.shape[1]):
        z = x_bt[:, i, :] @ sd["E.weight"].T + sd["E.bias"]
        if solver == "euler":
            h = h + eps * alpha * (h @ A) + eps * torch.tanh(h @ W + z)
        else:  # midpoint
            k1 = alpha * (h @ A) + torch.tanh(h @ W + z)
            hm = h + eps / 2 * k1
            h = h + eps * (alpha * (hm @ A) + torch.tanh(hm @ W + z))
    return h @ sd["D.weight"].T + sd["D.bias"]
