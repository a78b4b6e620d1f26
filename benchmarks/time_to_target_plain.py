"""The plain arm of benchmarks/time_to_target.py: the tuning script a user writes from Optuna's own examples.

Example: python benchmarks/time_to_target_plain.py /tmp/time_to_target/addition-gru/plain-s0/setup.json

What a competent user writes by following Optuna's PyTorch example (``pytorch_simple.py`` in optuna-examples) and
its MLflow example (``mlflow_simple.py``): an objective that builds the model, trains it epoch by epoch, calls
``trial.report`` with the validation accuracy and ``trial.should_prune`` after each epoch (a ``MedianPruner``),
and returns the last epoch's accuracy; optuna-integration's ``MLflowCallback`` logs every trial to MLflow.

- MNIST: ``torchvision.datasets.MNIST`` with ``ToTensor`` + ``Normalize`` through a ``DataLoader`` with
  ``num_workers`` from the setup (time_to_target.py's ``--plain-workers``, 2 by default: one per core of the
  2-core machines it was written on; the example leaves 0), loaded inside the objective as the example does,
  read row by row by ``nn.GRU``/``nn.LSTM`` with a linear head on the last step.
- Addition: the course notebook's generator (operands below 2^(L-1), least-significant bit first), one string
  per sample in a ``Dataset`` as the notebook's is, batched by a ``DataLoader`` whose ``collate_fn`` pads and
  masks; validated on 50 strings per length 1..max_train_length, bit accuracy averaged over lengths.

The setup file (written by time_to_target.py before it starts this process) holds the study file's space, fixed
settings, epochs, TPE settings and median-pruner settings, so that the two arms search the same space. After
``MLflowCallback`` has logged a trial, a second callback appends the trial's number, state, value and the time
(``time.time()``) to the results file: the moment its result is stored, logging included.
"""

import json
import random
import sys
import time


def main(setup_path: str) -> int:
    with open(setup_path) as f:
        setup = json.load(f)

    import optuna
    import torch
    import torch.nn.functional as F
    from optuna_integration.mlflow import MLflowCallback
    from torch import nn
    from torch.utils.data import DataLoader, Dataset, Subset, random_split

    task, arch, fixed, epochs = setup["task"], setup["arch"], setup["fixed"], setup["epochs"]
    max_length = fixed.get("max_train_length", 20)
    workers = setup["num_workers"]

    class Net(nn.Module):
        def __init__(self, hidden, layers, dropout):
            super().__init__()
            rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[arch]
            self.rnn = rnn(28 if task == "mnist" else 2, hidden, layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
            self.head = nn.Linear(hidden, 10 if task == "mnist" else 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1]) if task == "mnist" else self.head(out).squeeze(-1)

    def addition_string(length, rng):
        a, b = rng.randrange(2 ** (length - 1)), rng.randrange(2 ** (length - 1))
        total = a + b
        x = torch.tensor([[(a >> t) & 1, (b >> t) & 1] for t in range(length)], dtype=torch.float32)
        y = torch.tensor([(total >> t) & 1 for t in range(length)], dtype=torch.float32)
        return x, y

    class AdditionDataset(Dataset):
        def __init__(self, lengths, seed):
            rng = random.Random(seed)
            self.strings = [addition_string(length, rng) for length in lengths]

        def __len__(self):
            return len(self.strings)

        def __getitem__(self, i):
            return self.strings[i]

    def pad(batch):
        xs, ys = zip(*batch, strict=True)
        lengths = torch.tensor([len(y) for y in ys])
        mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
        return (nn.utils.rnn.pad_sequence(xs, batch_first=True), nn.utils.rnn.pad_sequence(ys, batch_first=True),
                mask.float())

    def get_mnist(batch_size):
        from torchvision import datasets, transforms

        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        full = datasets.MNIST(setup["data_dir"], train=True, download=False, transform=transform)
        train, valid = random_split(full, [50_000, 10_000], generator=torch.Generator().manual_seed(0))
        if fixed.get("train_size"):
            train = Subset(train, range(fixed["train_size"]))
        return (DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers),
                DataLoader(valid, batch_size=1000, num_workers=workers))

    if task == "addition":  # generated once, as a user keeps a seeded data set
        rng = random.Random(0)
        train_set = AdditionDataset([rng.randint(1, max_length) for _ in range(fixed.get("train_size", 10_000))], 0)
        valid_x, valid_y, valid_mask = pad(AdditionDataset(
            [n for n in range(1, max_length + 1) for _ in range(50)], 1).strings)

    def suggest(trial, p):
        if p["kind"] == "int":
            return trial.suggest_int(p["name"], p["low"], p["high"], step=p["step"] or 1, log=p["log"])
        if p["kind"] == "float":
            return trial.suggest_float(p["name"], p["low"], p["high"], step=p["step"], log=p["log"])
        return trial.suggest_categorical(p["name"], p["choices"])

    def objective(trial):
        params = {**fixed, **{p["name"]: suggest(trial, p) for p in setup["space"]}}
        model = Net(params["hidden_size"], params["num_layers"], params.get("dropout", 0.0))
        opt_class = torch.optim.AdamW if params.get("optimizer", "adam") == "adamw" else torch.optim.Adam
        optimizer = opt_class(model.parameters(), lr=params["lr"], weight_decay=params.get("weight_decay", 0.0))
        if task == "mnist":
            train_loader, valid_loader = get_mnist(params["batch_size"])
        else:
            train_loader = DataLoader(train_set, batch_size=params["batch_size"], shuffle=True, collate_fn=pad)
        steps = epochs * len(train_loader)
        schedule = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, params["lr"],
                                                                              total_steps=steps),
                    "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)}.get(
                        params.get("schedule", "constant"), lambda: None)()
        for epoch in range(1, epochs + 1):
            model.train()
            for batch in train_loader:
                if task == "mnist":
                    images, labels = batch
                    logits = model(images.squeeze(1))
                    loss = (F.cross_entropy(logits, labels) if params["loss"] == "ce" else
                            F.mse_loss(logits.softmax(-1), F.one_hot(labels, 10).float()))
                else:
                    x, y, mask = batch
                    logits = model(x)
                    per_bit = (F.binary_cross_entropy_with_logits(logits, y, reduction="none")
                               if params["loss"] == "ce" else (logits.sigmoid() - y) ** 2)
                    loss = (per_bit * mask).sum() / mask.sum()
                optimizer.zero_grad()
                loss.backward()
                if params.get("clip_grad"):
                    nn.utils.clip_grad_norm_(model.parameters(), params["clip_grad"])
                optimizer.step()
                if schedule:
                    schedule.step()
            model.eval()
            with torch.no_grad():
                if task == "mnist":
                    correct = sum((model(images.squeeze(1)).argmax(-1) == labels).sum().item()
                                  for images, labels in valid_loader)
                    accuracy = correct / len(valid_loader.dataset)
                else:
                    hits = ((model(valid_x) > 0).float() == valid_y).float() * valid_mask
                    accuracy = (hits.view(max_length, 50, -1).sum((1, 2))
                                / valid_mask.view(max_length, 50, -1).sum((1, 2))).mean().item()
            trial.report(accuracy, epoch)
            # Not after the last epoch: pruning there saves no training and throws a trained model away.
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    def stored(study, trial):
        with open(setup["results"], "a") as f:
            f.write(json.dumps({"number": trial.number, "state": trial.state.name, "value": trial.value,
                                "stored_at": time.time()}) + "\n")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(**setup["sampler"])
    study = optuna.create_study(direction="maximize", study_name=setup["study_name"], sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(**setup["pruner"]))
    mlflc = MLflowCallback(tracking_uri=setup["tracking_uri"], metric_name="val_acc")
    study.optimize(objective, timeout=setup["budget_s"], callbacks=[mlflc, stored])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
