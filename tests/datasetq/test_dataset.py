import numpy as np
import pytest
import torch
from torchvision import transforms

import datasetq
from datasetq import DataLoader, HeapqSampler, IndexedDataset, decorate_with_indices, with_indices
from datasetq.datasets import EmbeddedMNIST


def test_embedded_mnist_is_the_real_test_set():
    dataset = EmbeddedMNIST()
    assert len(dataset) == 10_000
    counts = np.bincount(dataset.targets.numpy(), minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    image, label = dataset[0]
    assert image.size == (28, 28)
    assert label == 7
    assert dataset.classes[7] == "7 - seven"


def test_embedded_mnist_applies_transforms():
    dataset = EmbeddedMNIST(transform=transforms.ToTensor(), target_transform=lambda y: y + 100)
    image, label = dataset[1]
    assert image.shape == (1, 28, 28)
    assert image.dtype == torch.float32
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert label == 102


def test_decorate_with_indices_returns_index_and_item():
    Indexed = decorate_with_indices(EmbeddedMNIST)
    dataset = Indexed(transform=transforms.ToTensor())
    index, (_image, label) = dataset[42]
    assert index == 42
    assert label == int(EmbeddedMNIST().targets[42])
    assert isinstance(dataset, EmbeddedMNIST)
    assert Indexed.__name__ == "EmbeddedMNIST"


def test_indexed_dataset_wraps_an_instance_and_exposes_its_attributes():
    base = EmbeddedMNIST()
    dataset = with_indices(base)
    assert isinstance(dataset, IndexedDataset)
    assert len(dataset) == len(base)
    assert dataset[3][0] == 3
    assert dataset.classes == base.classes
    with pytest.raises(ValueError, match="map-style dataset"):
        IndexedDataset(42)


def test_dataloader_update_forwards_to_the_sampler():
    dataset = with_indices(list(range(10)))
    sampler = HeapqSampler(dataset, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    for index, _ in loader:
        loader.update(index.tolist(), {"loss": (index * 1.0).tolist()})
    assert sampler.loss.tolist() == [float(i) for i in range(10)]
    assert len(loader) == 3
    plain = DataLoader(dataset, batch_size=4)
    with pytest.raises(ValueError, match="no HeapqSampler"):
        plain.update([0], {"loss": [1.0]})


def test_public_api_is_sorted_and_complete():
    assert datasetq.__all__ == sorted(datasetq.__all__)
    for name in datasetq.__all__:
        assert getattr(datasetq, name) is not None


def test_workers_read_the_sampler_from_the_main_process():
    dataset = with_indices([torch.tensor(float(i)) for i in range(64)])
    sampler = HeapqSampler(dataset, seed=0, max_visits=4, chunk_size=8)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2)
    seen = 0
    for _ in range(3):
        for index, values in loader:
            assert torch.equal(index.float(), values)
            loader.update(index, {"loss": values})
            seen += len(index)
    assert seen == 3 * 64
    assert int(sampler.visits.sum()) == seen


def test_indices_survive_a_base_that_fetches_batches_itself():
    """A Subset has ``__getitems__``; the DataLoader must still get ``(index, item)``."""
    base = torch.utils.data.Subset(
        [(torch.tensor([float(i)]), i % 3) for i in range(20)], range(5, 15)
    )
    loader = torch.utils.data.DataLoader(with_indices(base), batch_size=4)
    index, (data, target) = next(iter(loader))
    assert index.tolist() == [0, 1, 2, 3]
    assert data.squeeze(1).tolist() == [5.0, 6.0, 7.0, 8.0]
    assert target.tolist() == [2, 0, 1, 2]
