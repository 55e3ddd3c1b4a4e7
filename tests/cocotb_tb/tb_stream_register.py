"""cocotb testbench of rtl.stream_register.StreamRegister: every payload comes out once and in
order under random idle cycles and backpressure, and a stream that never stalls never waits."""

import cocotb
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB


class TB(ClockedTB):
    def __init__(self, dut):
        super().__init__(dut)
        dut.inputs__valid.value = 0
        dut.outputs__ready.value = 0

    def payloads(self, count):
        return [int(v) for v in self.rng.integers(0, 1 << len(self.dut.inputs__payload), count)]


@cocotb.test()
async def payloads_in_order_under_backpressure(dut):
    tb = TB(dut)
    await tb.start()
    for input_idle, output_stall in ((0.0, 0.0), (0.3, 0.3), (0.0, 0.7), (0.7, 0.0), (0.5, 0.9)):
        sent = tb.payloads(300)
        got = await tb.stream_through(sent, input_idle=input_idle, output_stall=output_stall)
        assert got == sent, f"idle {input_idle}, stall {output_stall}"


@cocotb.test()
async def full_throughput_with_one_cycle_latency(dut):
    tb = TB(dut)
    await tb.start()
    sent = tb.payloads(50)
    dut.outputs__ready.value = 1
    got = []
    for cycle in range(len(sent) + 1):
        await FallingEdge(dut.clk)
        dut.inputs__valid.value = int(cycle < len(sent))
        if cycle < len(sent):
            dut.inputs__payload.value = sent[cycle]
        await Timer(1, unit="ns")
        assert dut.inputs__ready.value == 1, f"cycle {cycle}: a stream that never stalls waited"
        assert dut.outputs__valid.value == (cycle >= 1), f"cycle {cycle}: latency is one cycle"
        if dut.outputs__valid.value:
            got.append(dut.outputs__payload.value.to_unsigned())
    assert got == sent
