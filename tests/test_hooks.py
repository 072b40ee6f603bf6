"""core.hooks.hooks: one lifecycle for every forward hook (installed on entry, removed on every exit path)."""
import pytest
import torch
from torch import nn

from acttail_lab.core.hooks import Hook, hooks


class Boom(Exception):
    pass


def counts(*modules):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in modules]


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))


def test_pre_and_post_hooks_run_and_are_removed_after_the_body(net):
    calls = []
    pre = [(net[0], lambda m, args: calls.append("pre0")), (net[1], lambda m, args: calls.append("pre1"))]
    post = [(net[1], lambda m, args, out: calls.append("post1"))]
    with hooks(pre=pre, post=post) as handles:
        assert len(handles) == 3
        assert counts(net[0], net[1]) == [(1, 0), (1, 1)]
        net(torch.ones(1, 4))
    assert calls == ["pre0", "pre1", "post1"]
    assert counts(net[0], net[1]) == [(0, 0), (0, 0)]
    net(torch.ones(1, 4))
    assert len(calls) == 3  # nothing runs after exit


def test_hooks_change_inputs_and_outputs_while_active(net):
    x = torch.randn(2, 4)
    dense = net(x)
    zero_in = (net[0], lambda m, args: (torch.zeros_like(args[0]),))
    double_out = (net[1], lambda m, args, out: 2 * out)
    with torch.no_grad(), hooks(pre=[zero_in], post=[double_out]):
        out = net(x)
    expected = 2 * net[1](net[0](torch.zeros_like(x)))
    assert torch.allclose(out, expected)
    assert torch.equal(net(x), dense)


def test_hooks_removed_after_an_exception_in_the_body(net):
    with pytest.raises(Boom):
        with hooks(pre=[(net[0], lambda m, a: None)], post=[(net[0], lambda m, a, o: None)]):
            assert counts(net[0]) == [(1, 1)]
            raise Boom
    assert counts(net[0]) == [(0, 0)]


def test_hooks_removed_when_registration_fails_half_way(net):
    def items():
        yield (net[0], lambda m, a: None)
        yield (net[1], lambda m, a: None)
        raise Boom  # the third hook cannot be built

    with pytest.raises(Boom):
        with hooks(pre=items()):
            pytest.fail("the body must not run")
    assert counts(net[0], net[1]) == [(0, 0), (0, 0)]

    # a malformed post item after valid pre items: the pre hooks are removed again
    with pytest.raises(TypeError):
        with hooks(pre=[(net[0], lambda m, a: None)], post=[(net[1],)]):
            pytest.fail("the body must not run")
    assert counts(net[0], net[1]) == [(0, 0), (0, 0)]


def test_with_kwargs_per_hook_and_as_default():
    class Scaled(nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    mod = Scaled()
    seen = {}

    def pre_kw(m, args, kwargs):
        seen["pre"] = dict(kwargs)
        return args, {**kwargs, "scale": 3.0}

    def post_kw(m, args, kwargs, out):
        seen["post"] = dict(kwargs)
        return out + 1

    x = torch.ones(2)
    with hooks(pre=[(mod, pre_kw, True)], post=[Hook(mod, post_kw, with_kwargs=True)]):
        out = mod(x, scale=2.0)
    assert seen == {"pre": {"scale": 2.0}, "post": {"scale": 3.0}}
    assert torch.equal(out, torch.full((2,), 4.0))
    with hooks(pre=[(mod, pre_kw)], with_kwargs=True):  # the default flag applies to pairs
        assert torch.equal(mod(x, scale=2.0), torch.full((2,), 3.0))
    assert torch.equal(mod(x, scale=2.0), torch.full((2,), 2.0))
    assert counts(mod) == [(0, 0)]


def test_pre_hooks_on_one_module_run_in_the_order_given(net):
    order = []
    with hooks(pre=[(net[0], lambda m, a: order.append(1)), (net[0], lambda m, a: order.append(2))]):
        net(torch.ones(1, 4))
    assert order == [1, 2]
