"""The env-level options (``features=``, ``action_encoding=``) on every registered ID, and the
experts seen through them (``make_policy`` returns actions in the env's encoding, charged what the
plain env charges for the same decision)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env  # noqa: F401 - registers the IDs
from jmsra_env.expert_policy import ENCODING_RTOL
from jmsra_env.features import FeatureObservation, VectorFeatureObservation, n_features, observation_features
from jmsra_env.policies import env_views, make_policy
from jmsra_env.registration import ENV_IDS, SESSION_ENV_IDS
from jmsra_env.session_experts import SESSION_EXPERT_NAMES
from jmsra_env.solvers import EXPERT_NAMES

ALL_IDS = ENV_IDS + SESSION_ENV_IDS


def _vec(id_, m=3, **kwargs):
    return gym.make_vec(id_, num_envs=m, vectorization_mode="vector_entry_point", **kwargs)


@pytest.mark.parametrize("id_", ALL_IDS)
def test_every_id_takes_the_options_single_and_vector(id_):
    box = "-Box-" in id_
    encoding = "deadline" if box else None
    env = gym.make(id_, features="physics", action_encoding=encoding)
    cfg = env.unwrapped.config
    size = n_features(cfg.n_agents, "physics", session=cfg.session.enabled)
    assert env.observation_space.shape == (size,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (size,) and obs.dtype == np.float32
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == (size,) and np.isfinite(reward)
    venv = _vec(id_, features="log", action_encoding="solved" if box else None)
    size = n_features(cfg.n_agents, "log", session=cfg.session.enabled)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, size)
    obs, rewards, *_ = venv.step(venv.action_space.sample())
    assert obs.shape == (3, size) and np.isfinite(rewards).all()


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Session-v0"])
def test_an_encoding_on_a_dict_id_is_refused(id_):
    with pytest.raises(ValueError, match="action_encoding"):
        gym.make(id_, action_encoding="deadline")
    with pytest.raises(ValueError, match="action_encoding"):
        _vec(id_, action_encoding="solved")


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Session-Box-v1", "jmsra_env/JMSRA-Session-TightPool-v0"])
def test_session_features_are_those_of_the_raw_env(id_):
    """The wrapped session env runs the raw env unchanged: same seed and actions, the features of
    the raw observations (session block included)."""
    raw, wrapped = gym.make(id_), gym.make(id_, features="physics")
    consts = raw.unwrapped.consts
    o_raw, _ = raw.reset(seed=5)
    o_feat, _ = wrapped.reset(seed=5)
    raw.action_space.seed(1)
    for _ in range(5):
        np.testing.assert_array_equal(o_feat, observation_features(o_raw, consts, "physics", session=True))
        a = raw.action_space.sample()
        o_raw, r_raw, *_ = raw.step(a)
        o_feat, r_feat, *_ = wrapped.step(a)
        assert r_raw == r_feat
    assert o_feat.shape[-1] == n_features(raw.unwrapped.config.n_agents, "physics", session=True)


def test_env_views_find_the_layers_through_gymnasium_wrappers():
    env = gym.make("jmsra_env/JMSRA-Session-Box-v1", features="log", action_encoding="solved")
    layer, encoding = env_views(env)
    assert isinstance(layer, FeatureObservation) and encoding == "solved"
    venv = _vec("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
    layer, encoding = env_views(venv)
    assert isinstance(layer, VectorFeatureObservation) and encoding == "deadline"
    assert env_views(gym.make("jmsra_env/JMSRA-Box-v1")) == (None, None)


OPTIONS = [(f, e) for f in (None, "log", "physics") for e in (None, "deadline", "solved")]
# The experts whose decisions an encoding always expresses (the Box form, None, expresses every
# decision). "solved" reaches 10x around the (P2) optimum for the chosen media: the experts that
# split by (P2); "deadline" reaches finish targets of 0.1 s .. 100 s: all but ``random``. Other
# decisions may be refused (a ValueError), never silently changed (checked below).
P2_EXPERTS = ("optimal", "jmsra", "nl-only", "kv-only")
EXPRESSED = {None: EXPERT_NAMES, "deadline": tuple(n for n in EXPERT_NAMES if n != "random"), "solved": P2_EXPERTS}
CASES = [(n, f, e) for f, e in OPTIONS for n in EXPRESSED[e]]
MAYBE_REFUSED = [(n, e) for e in ("deadline", "solved") for n in EXPERT_NAMES if n not in EXPRESSED[e]]


def _charged(id_, name, features, encoding, rounds=3, m=6, seed=11):
    """Latencies charged to the expert's actions on the plain env and on the env with the options,
    stepped side by side (the same seeds, the same decisions)."""
    plain = _vec(id_, m)
    wrapped = _vec(id_, m, features=features, action_encoding=encoding)
    p_plain, p_wrapped = make_policy(name, plain, seed=0), make_policy(name, wrapped, seed=0)
    o_plain, _ = plain.reset(seed=seed)
    o_wrapped, _ = wrapped.reset(seed=seed)
    got, want = [], []
    for _ in range(rounds):
        a_wrapped, _ = p_wrapped.predict(o_wrapped)
        a_plain, _ = p_plain.predict(o_plain)
        o_plain, _, _, _, i_plain = plain.step(a_plain)
        o_wrapped, _, _, _, i_wrapped = wrapped.step(a_wrapped)
        want.append(i_plain["latency_s"])
        got.append(i_wrapped["latency_s"])
    return np.array(got), np.array(want)


@pytest.mark.parametrize("name,features,encoding", CASES)
def test_experts_are_charged_the_plain_latency_through_every_option(name, features, encoding):
    got, want = _charged("jmsra_env/JMSRA-Box-v1", name, features, encoding)
    np.testing.assert_allclose(got, want, rtol=ENCODING_RTOL, atol=0.0)


@pytest.mark.parametrize("features,encoding", OPTIONS)
@pytest.mark.parametrize("name", [n for n in SESSION_EXPERT_NAMES if n != "lookahead"] + ["lookahead"])
def test_session_experts_are_charged_the_plain_latency_through_every_option(name, features, encoding):
    rounds = 2 if name in ("lookahead", "clairvoyant") else 4
    got, want = _charged("jmsra_env/JMSRA-Session-Box-v1", name, features, encoding, rounds=rounds, m=4)
    np.testing.assert_allclose(got, want, rtol=ENCODING_RTOL, atol=0.0)


@pytest.mark.parametrize("features", [None, "physics"])
def test_dict_ids_with_features_are_charged_the_plain_latency(features):
    got, want = _charged("jmsra_env/JMSRA-Session-v0", "pool-aware", features, None)
    np.testing.assert_allclose(got, want, rtol=ENCODING_RTOL, atol=0.0)
    got, want = _charged("jmsra_env/JMSRA-N8-v0", "jmsra", features, None)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,encoding", MAYBE_REFUSED)
def test_a_decision_the_encoding_cannot_express_is_refused_never_silently_changed(name, encoding):
    """Every action an expert returns through an encoding is charged the plain latency; the
    decisions the encoding cannot express are a ValueError naming the encoding."""
    plain = _vec("jmsra_env/JMSRA-StaleCSI-Box-v1", 1)
    wrapped = _vec("jmsra_env/JMSRA-StaleCSI-Box-v1", 1, action_encoding=encoding)
    p_plain, p_wrapped = make_policy(name, plain, seed=3), make_policy(name, wrapped, seed=3)
    o_plain, _ = plain.reset(seed=2)
    o_wrapped, _ = wrapped.reset(seed=2)
    refused = charged = 0
    for k in range(40):
        a_plain, _ = p_plain.predict(o_plain)  # both policies draw once per round: in step
        try:
            a_wrapped, _ = p_wrapped.predict(o_wrapped)
        except ValueError as exc:
            assert f"action_encoding={encoding!r}" in str(exc)
            refused += 1
            o_plain, _ = plain.reset(seed=100 + k)  # start both over, in step
            o_wrapped, _ = wrapped.reset(seed=100 + k)
            continue
        o_plain, _, _, _, i_plain = plain.step(a_plain)
        o_wrapped, _, _, _, i_wrapped = wrapped.step(a_wrapped)
        np.testing.assert_allclose(i_wrapped["latency_s"], i_plain["latency_s"], rtol=ENCODING_RTOL, atol=0.0)
        charged += 1
    assert refused + charged == 40
    if name == "random":
        assert refused > 0 and charged > 0  # both happen: the check is live and not blanket


def test_a_feature_vector_that_is_not_the_last_observation_is_refused():
    env = gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
    obs, _ = env.reset(seed=0)
    policy = make_policy("jmsra", env)
    with pytest.raises(ValueError, match="last feature observation"):
        policy.predict(obs + 1.0)
    with pytest.raises(ValueError, match="Dict observation"):
        make_policy("jmsra", config=env.unwrapped.config, action_form="box").predict(obs)
    action, _ = policy.predict(obs)
    assert action.shape == (8,) and np.all(np.abs(action) <= 1.0)


def test_make_policy_takes_an_encoding_without_an_env():
    env = gym.make("jmsra_env/JMSRA-Box-v1", action_encoding="solved")
    obs, _ = env.reset(seed=1)
    policy = make_policy("optimal", config=env.unwrapped.config, action_form="box", action_encoding="solved")
    action, _ = policy.predict(obs)
    np.testing.assert_array_equal(action[4:], 0.0)  # the optimal split is the zero action
    with pytest.raises(ValueError, match="action_encoding"):
        make_policy("optimal", config=env.unwrapped.config, action_encoding="nope")
    with pytest.raises(ValueError, match="Box action form"):
        make_policy("optimal", config=env.unwrapped.config, action_form="dict", action_encoding="deadline")


# -- every action form and wrapper refuses what is not finite real numbers of the right shape ---

BAD_ENTRIES = {
    "nan": np.nan,
    "inf": -np.inf,
    "huge int": 10**400,
    "complex": 0.5 + 1j,
    "numeric string": "0.5",
    "object": object(),
    "None": None,
}


def _action_forms():
    """(label, env, field, make_bad(env, value)) for every action form and wrapper."""

    def box_bad(space, value, m=None):
        a = space.sample().astype(object)
        a.flat[1] = value
        return a

    def dict_bad(space, value):
        a = dict(space.sample())
        b = np.asarray(a["bandwidth"]).astype(object)
        b.flat[0] = value
        return {"media": a["media"], "bandwidth": b}

    forms = []
    for id_ in ("jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Session-v0"):
        forms.append((f"{id_} dict", gym.make(id_), "bandwidth", dict_bad))
        forms.append((f"{id_} dict vector", _vec(id_, 2), "bandwidth", dict_bad))
        forms.append((f"{id_} BoxActionWrapper", jmsra_env.BoxActionWrapper(gym.make(id_)), "action", box_bad))
    for id_ in ("jmsra_env/JMSRA-Box-v1", "jmsra_env/JMSRA-Session-Box-v1"):
        forms.append((f"{id_} box", gym.make(id_), "action", box_bad))
        forms.append((f"{id_} box vector", _vec(id_, 2), "action", box_bad))
        for enc in ("deadline", "solved"):
            forms.append((f"{id_} {enc}", gym.make(id_, action_encoding=enc, features="log"), "action", box_bad))
            forms.append((f"{id_} {enc} vector", _vec(id_, 2, action_encoding=enc), "action", box_bad))
    return forms


@pytest.mark.parametrize("label,env,field,make_bad", _action_forms(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_action_form_refuses_non_real_entries_naming_the_field(label, env, field, make_bad):
    obs, _ = env.reset(seed=0)
    space = env.action_space
    for name, value in BAD_ENTRIES.items():
        with pytest.raises(ValueError, match=f"'{field}'"):
            env.step(make_bad(space, value))
    wrong = {"media": space.sample()["media"], "bandwidth": np.ones(3)} if field == "bandwidth" else np.zeros(3)
    with pytest.raises(ValueError, match=f"'{field}' must have shape"):
        env.step(wrong)
    env.step(space.sample())  # the env is still usable after the refusals


def test_the_sb3_encoding_wrapper_refuses_non_real_actions():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from jmsra_agents.encoding import EncodedActionVecEnv

    cfg = gym.make("jmsra_env/JMSRA-Box-v1").unwrapped.config
    venv = EncodedActionVecEnv(DummyVecEnv([lambda: gym.make("jmsra_env/JMSRA-Box-v1")] * 2), cfg, "deadline")
    venv.reset()
    for value in BAD_ENTRIES.values():
        a = np.zeros((2, 8), dtype=object)
        a[1, 3] = value
        with pytest.raises(ValueError, match="'action'"):
            venv.step_async(a)
    with pytest.raises(ValueError, match="'action' must have shape"):
        venv.step_async(np.zeros((2, 7)))
    venv.step_async(np.zeros((2, 8)))
    venv.step_wait()


@pytest.mark.parametrize("value", [10**400, 1j, "0.5", None])
def test_a_multiagent_action_of_non_real_entries_names_the_agent(value):
    from jmsra_env.multiagent import parallel_env

    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    acts = {a: np.array([0.0, 0.5]) for a in ma.agents}
    acts["agent_2"] = np.array([0.0, value], dtype=object)
    with pytest.raises(ValueError, match="'agent_2'"):
        ma.step(acts)


def test_experts_see_through_the_sb3_training_stack():
    """make_policy on jmsra_agents.envs.make_train_env's VecEnv (encoding, features, VecNormalize): the
    expert decides on the raw observation behind the (unnormalised) features and acts in the
    stack's encoding, charged what the plain VecEnv charges for the same decisions."""
    from jmsra_agents.envs import RoundRecorder, find_wrapper, make_base_vec_env, make_train_env

    id_ = "jmsra_env/JMSRA-Session-Box-v1"
    venv = make_train_env(id_, 2, seed=4, features="physics", action_encoding="solved")
    plain = make_base_vec_env(id_, 2, seed=4)
    policy, reference = make_policy("pool-aware", venv), make_policy("pool-aware", plain)
    assert policy.action_encoding == "solved" and policy.feature_source is not None
    recorder = find_wrapper(venv, RoundRecorder)
    venv.reset()
    obs_plain = plain.reset()
    for _ in range(3):
        with pytest.raises(ValueError, match="last feature observation"):
            policy.predict(venv.normalize_obs(venv.get_original_obs()))  # normalised: not the features
        action, _ = policy.predict(venv.get_original_obs())
        venv.step(action)
        obs_plain, _, _, infos = plain.step(reference.predict(obs_plain)[0])
        np.testing.assert_allclose(
            recorder.pop()["latency_s"], [i["latency_s"] for i in infos], rtol=ENCODING_RTOL, atol=0.0
        )


@pytest.mark.parametrize("features", [None, "physics"])
def test_experts_see_through_the_options_of_sync_vector_envs(features):
    """gym.make_vec(..., vectorization_mode="sync") and SB3's DummyVecEnv hold wrapped
    sub-environments: make_policy finds their encoding and stacks their raw observations."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    id_ = "jmsra_env/JMSRA-Box-v1"
    sync = gym.make_vec(id_, num_envs=3, vectorization_mode="sync", features=features, action_encoding="deadline")
    plain = gym.make_vec(id_, num_envs=3, vectorization_mode="sync")
    policy, reference = make_policy("jmsra", sync), make_policy("jmsra", plain)
    assert policy.action_encoding == "deadline" and (policy.feature_source is None) == (features is None)
    obs, _ = sync.reset(seed=3)
    obs_plain, _ = plain.reset(seed=3)
    for _ in range(3):
        obs, _, _, _, info = sync.step(policy.predict(obs)[0])
        obs_plain, _, _, _, info_plain = plain.step(reference.predict(obs_plain)[0])
        np.testing.assert_allclose(info["latency_s"], info_plain["latency_s"], rtol=ENCODING_RTOL, atol=0.0)
    dummy = DummyVecEnv([lambda: gym.make(id_, features=features, action_encoding="solved")] * 2)
    policy = make_policy("optimal", dummy)
    assert policy.action_encoding == "solved"
    obs = dummy.reset()
    action, _ = policy.predict(obs)
    np.testing.assert_array_equal(action[:, 4:], 0.0)  # the optimal split is the zero action


def test_features_in_other_processes_are_refused_not_guessed():
    venv = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=2, vectorization_mode="async", features="log",
                        action_encoding="deadline")
    try:
        with pytest.raises(ValueError, match="other processes"):
            make_policy("jmsra", venv)
    finally:
        venv.close()


def test_express_deadline_is_exact_where_the_one_target_bc_encoding_is_not():
    """On 512 rounds, JMSRA's decisions through express_deadline (what the policies return) are
    charged their latency to 1e-6; encode_deadline (one finish target per round: the behaviour-
    cloning target) misses some compute-bound agents by up to ~1e-3 of the round."""
    from jmsra_env import actions, model
    from jmsra_env.encoding import encode_deadline, express_deadline, to_env_action
    from jmsra_env.solvers import solve

    venv = _vec("jmsra_env/JMSRA-Box-v1", 512)
    obs, _ = venv.reset(seed=0)
    consts = venv.unwrapped.consts
    terms = model.terms_from_observation(consts, obs)
    d = solve("jmsra", terms)

    def charged(code):
        return model.latency(terms, *actions.decode_box(to_env_action("deadline", code, obs, consts), terms)).latency_s

    exact = np.abs(charged(express_deadline(d.media, d.bandwidth_hz, terms)) / d.latency_s - 1.0)
    one_target = np.abs(charged(encode_deadline(d.media, d.bandwidth_hz, terms)) / d.latency_s - 1.0)
    assert exact.max() <= ENCODING_RTOL
    assert one_target.max() > 10 * ENCODING_RTOL and one_target.max() < 2e-3


def test_experts_see_the_encoding_of_the_torch_vector_env():
    """The torch vector env applies action_encoding= itself: make_policy reads it there, takes
    the tensors of its observations, and refuses the torch env's own features (no raw
    observation to decide on)."""
    import torch

    torch_env = _vec("jmsra_env/JMSRA-Box-v1", 4, backend="torch", dtype=torch.float64, action_encoding="deadline")
    plain = _vec("jmsra_env/JMSRA-Box-v1", 4, backend="torch", dtype=torch.float64)  # the same draws
    policy, reference = make_policy("jmsra", torch_env), make_policy("jmsra", plain)
    assert policy.action_encoding == "deadline"
    obs, _ = torch_env.reset(seed=2)
    obs_plain, _ = plain.reset(seed=2)
    for _ in range(3):
        obs, _, _, _, info = torch_env.step(policy.predict(obs)[0])
        obs_plain, _, _, _, info_plain = plain.step(reference.predict(obs_plain)[0])
        np.testing.assert_allclose(info["latency_s"].numpy(), info_plain["latency_s"].numpy(), rtol=ENCODING_RTOL)
    with pytest.raises(ValueError, match="applies features= itself"):
        make_policy("jmsra", _vec("jmsra_env/JMSRA-Box-v1", 2, backend="torch", features="log"))
