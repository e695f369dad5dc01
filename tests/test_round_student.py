"""The round's student (coopt_flower.round_student): packed for transport, rebuilt on a participant."""

import numpy as np

from coopt_flower.prototypes import create_prototype
from coopt_flower.round_student import payload_digest, student_from_payload, student_payload


def test_student_payload_round_trips_to_the_same_prototype(train_tiny_student):
    result, images = train_tiny_student(image_size=16, target_dim=6)
    state, config = student_payload(result.checkpoint_path)
    assert all(isinstance(v, np.ndarray) for v in state.values()) and config["target_dim"] == 6
    rebuilt = student_from_payload(state, config)
    direct = create_prototype(f"student:{result.checkpoint_path}")
    batch = images.permute(0, 2, 3, 1).numpy()
    assert rebuilt.output_dim == 6 and rebuilt.spec == f"student:{config['digest']}"
    assert np.allclose(rebuilt.encode(batch), direct.encode(batch), atol=1e-5)
    # The digest names the weights: another student gets another one.
    state2, config2 = student_payload(result.checkpoint_path)
    assert config2["digest"] == config["digest"]
    state2["head.bias"] = state2["head.bias"] + 1
    assert payload_digest(state2) != config["digest"]
