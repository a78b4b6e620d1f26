"""The course notebook's training loops, copied faithfully, so that rnnbench is timed against what it replaces.

Example: rnnbench perf --threads 2   # the "notebook" columns
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..catalog import ARCHITECTURES
from ..cells.native import MODULES


# ---------------------------------------------------------------- the notebook, copied faithfully
class NotebookModel(nn.Module):
    """The notebook's models: seq-first nn.RNN/LSTM/GRU, X.permute(1, 0, 2), zero states built per call,
    readout h_n (RNN, BiRNN, BiLSTM) or out[-1] (LSTM, GRU). BiGRU is not in the notebook: BiLSTM's style."""

    def __init__(self, arch: str, hidden: int):
        super().__init__()
        spec = ARCHITECTURES[arch]
        self.cell, self.bidirectional, self.hidden = spec["cell"], spec["bidirectional"], hidden
        self.directions = 2 if self.bidirectional else 1
        self.rnn = MODULES[self.cell](28, hidden, 1, bidirectional=self.bidirectional)
        self.layer2 = nn.Linear(hidden * self.directions, 10)

    def forward(self, X):
        X = X.permute(1, 0, 2)
        state = torch.zeros(self.directions, X.size(1), self.hidden, device=X.device)
        if self.cell == "lstm":
            state = (state, torch.zeros(self.directions, X.size(1), self.hidden, device=X.device))
        out, state = self.rnn(X, state)
        if self.bidirectional:
            hidden = state[0] if self.cell == "lstm" else state
            return self.layer2(torch.cat((hidden[0], hidden[1]), dim=-1))
        if self.cell == "rnn":
            return self.layer2(state).reshape(X.size(1), 10)
        return self.layer2(out[-1]).reshape(X.size(1), 10)


def notebook_mnist_dataset(images: torch.Tensor, labels: torch.Tensor):
    """torchvision's MNIST dataset with ToTensor over these tensors (its own __getitem__: PIL image, ToTensor)."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    dataset = MNIST.__new__(MNIST)
    dataset.data, dataset.targets = images, labels
    dataset.transform, dataset.target_transform = transforms.ToTensor(), None
    return dataset


def notebook_mnist_rate(arch: str, loader, hidden: int, batches: int, device: str = "cpu") -> float:
    """Images/s of the notebook's training loop over a DataLoader(batch_size=500), one warm-up batch untimed;
    on a GPU each batch moves to it, as the notebook's ``.to(device)`` does."""
    model = NotebookModel(arch, hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    train_loss = []
    model.train()
    seen, started = 0, None
    for i, (images, labels) in enumerate(loader):
        if i == 1:
            seen, started = 0, time.perf_counter()
        images, labels = images.reshape(-1, 28, 28).to(device), labels.to(device)
        outputs = model(images)
        loss = criterion(outputs, labels)
        train_loss.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if i == batches:
            break
    return seen / (time.perf_counter() - started)


def bin_generator(L):
    """The notebook's string generator (operands below 2^(L-1), LSB first), verbatim."""
    N1 = np.random.randint(0, 2**(L - 1))
    N2 = np.random.randint(0, 2**(L - 1))
    S = N1 + N2
    binlen = L
    B1 = np.zeros((1, binlen))
    B2 = np.zeros((1, binlen))
    B3 = np.zeros((binlen))  # noqa: UP034 (verbatim)
    b = np.flip(np.array(list(np.binary_repr(N1)), dtype=int))
    B1[0][0:len(b)] = b[0:]
    b = np.flip(np.array(list(np.binary_repr(N2)), dtype=int))
    B2[0][0:len(b)] = b[0:]
    b = np.flip(np.array(list(np.binary_repr(S)), dtype=int))
    B3[0:len(b)] = b[0:]
    return np.concatenate((np.transpose(B1), np.transpose(B2)), axis=1), B3


class NotebookAdditionLSTM(nn.Module):
    def __init__(self, hidsize):
        super().__init__()
        self.hidsize = hidsize
        self.lstm = nn.LSTM(2, hidsize)
        self.layer2 = nn.Sequential(nn.Linear(hidsize, 1), nn.Sigmoid())

    def forward(self, X):
        X = X.permute(1, 0, 2)
        hiddenstate = torch.zeros(1, X.size(1), self.hidsize)
        cellstate = torch.zeros(1, X.size(1), self.hidsize)
        out, (hs, cs) = self.lstm(X, (hiddenstate, cellstate))
        out = self.layer2(out)
        return out.reshape(X.size(0))


def notebook_addition_rate(strings: int) -> float:
    """Strings/s of the notebook's one-string-at-a-time training loop (LSTM hidden 10, Adam 0.01, MSE)."""
    np.random.seed(0)
    train_X, train_Y = [], []
    for _ in range(strings):
        a, b = bin_generator(np.random.randint(1, 21))
        train_X.append(a)
        train_Y.append(b)
    model = NotebookAdditionLSTM(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.MSELoss()
    train_loss = []
    started = time.perf_counter()
    for i in range(int(len(train_X))):
        a = torch.zeros((1, train_X[i].shape[0], train_X[i].shape[1]))
        a[0] = torch.from_numpy(train_X[i])
        output = model(a.float())
        label = torch.tensor(np.transpose(train_Y[i]))
        loss = criterion(output, label.float())
        train_loss.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return strings / (time.perf_counter() - started)
