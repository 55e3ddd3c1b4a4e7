// The NPU top level (Verilator model of rtl.npu.Npu) with a DRAM model behind its AXI4 master
// port and AXI4-Lite host accessors, as a shared library with a C interface for Python (ctypes).
//
// No Python runs per cycle: Python calls npu_sim_run(), which clocks the model until the IRQ or a
// cycle limit. Built by sim/rtl_sim.py; the C interface is declared there too (keep in step).
//
// The model's top level is `npu_sim` (sim/sim_wrapper.py): the `npu` with a register in front of
// every input, clocked by its own clock `load`, and the NPU's port names. Writing an input port
// of the model therefore changes nothing yet; the NPU sees the value once `load` rises. That keeps
// every input out of Verilator's input-combinational region, which it evaluates on every eval(),
// so the NPU's logic is evaluated once per cycle instead of three times.
//
// One cycle (tick): the DRAM model and the host have set the NPU's inputs for this cycle and the
// model's outputs are settled; every channel whose valid and ready are both high transfers at the
// rising edge. The DRAM model takes the transfers and computes the inputs of the next cycle
// (it needs nothing from the model for that), writes them to the input ports, and the model is
// clocked once with `clk` and `load` rising together: the NPU's registers sample this cycle's
// inputs, the input registers take the next cycle's. Then both clocks fall (an evaluation with
// nothing to do).
// An input the host changes in the middle of a cycle (an AXI4-Lite request, the reset) reaches
// the NPU by `load` rising alone (load_inputs), exactly as if the port had changed: the NPU sees
// the same input values in every cycle as with its ports driven directly, and the CYCLES counter
// and every handshake are the same.

#include "Vnpu.h"
#include "verilated.h"
#ifdef NPU_TRACE
#include "verilated_fst_c.h"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#ifndef AXI_BYTES
#error "compile with -DAXI_BYTES=<bytes per AXI4 data beat>"
#endif

namespace {

constexpr uint32_t RESP_OKAY = 0, RESP_SLVERR = 2;

// Ports up to 64 bits are integers in Verilator, wider ones arrays of 32-bit words.
template <typename Port> void put_bytes(Port& port, const uint8_t* bytes) {
    if constexpr (std::is_integral_v<std::remove_reference_t<Port>>) {
        uint64_t value = 0;
        std::memcpy(&value, bytes, AXI_BYTES);
        port = value;
    } else {
        for (int word = 0; word < AXI_BYTES / 4; ++word) {
            uint32_t value;
            std::memcpy(&value, bytes + 4 * word, 4);
            port[word] = value;
        }
    }
}

template <typename Port> void get_bytes(const Port& port, uint8_t* bytes) {
    if constexpr (std::is_integral_v<std::remove_reference_t<Port>>) {
        uint64_t value = port;
        std::memcpy(bytes, &value, AXI_BYTES);
    } else {
        for (int word = 0; word < AXI_BYTES / 4; ++word) {
            uint32_t value = port[word];
            std::memcpy(bytes + 4 * word, &value, 4);
        }
    }
}

struct Burst {
    uint64_t address;   // of the first beat
    uint32_t beats;
    uint32_t size;      // bytes per beat (1 << AxSIZE)
    uint32_t id;
    uint32_t resp;      // OKAY, or the error every beat of the burst answers
    uint64_t ready_at;  // first cycle the response may appear
    uint32_t done = 0;  // beats transferred

    uint64_t beat_address(uint32_t beat) const {
        return beat == 0 ? address : (address & ~uint64_t(size - 1)) + uint64_t(beat) * size;
    }
    uint64_t end() const { return (address & ~uint64_t(size - 1)) + uint64_t(beats) * size; }
};

struct ErrorRange {
    uint64_t begin, end;
    bool reads, writes;
    uint32_t resp;
};

// splitmix64: a seeded stream for the random backpressure.
struct Random {
    uint64_t state = 1;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

}  // namespace

struct NpuSim {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vnpu> top;
#ifdef NPU_TRACE
    std::unique_ptr<VerilatedFstC> trace;
#endif
    std::vector<uint8_t> dram;
    uint64_t cycle = 0;

    // DRAM timing: cycles from the address handshake to the first response, and bytes per cycle.
    uint32_t read_latency = 16, write_latency = 8, max_outstanding = 16;
    uint32_t bytes_per_cycle = AXI_BYTES;
    uint32_t read_credit = 0, write_credit = 0;
    uint32_t stall_permille = 0;  // probability of a random pause on each channel, per cycle
    Random random;
    std::vector<ErrorRange> errors;

    std::deque<Burst> reads, writes, responses;  // AR taken; AW taken; B pending

    // AXI4-Lite host transaction in progress.
    bool host_aw = false, host_w = false, host_ar = false;

    bool pause() { return stall_permille && random.next() % 1000 < stall_permille; }

    uint32_t check(uint64_t begin, uint64_t end, bool write) const {
        if (end > dram.size()) return RESP_SLVERR;
        for (const ErrorRange& range : errors)
            if ((write ? range.writes : range.reads) && begin < range.end && range.begin < end)
                return range.resp;
        return RESP_OKAY;
    }

    void eval_trace(uint64_t time) {
        top->eval();
#ifdef NPU_TRACE
        if (trace) trace->dump(time);
#else
        (void)time;
#endif
    }

    // The inputs just written to the input ports reach the NPU now, in the middle of the cycle
    // (the input registers' clock `load` rises alone; the NPU's clock does not), and the model's
    // outputs settle: for changes the host makes between edges, which a port sees at once.
    void load_inputs() {
        top->load = 1;
        top->eval();
        top->load = 0;
        top->eval();
        inputs_pending = false;
    }

    void tick() {
        Vnpu& t = *top;
        // Transfers at this rising edge, from the settled valid/ready pairs.
        const bool ar = t.m_axi_arvalid && t.m_axi_arready;
        const bool r = t.m_axi_rvalid && t.m_axi_rready;
        const bool aw = t.m_axi_awvalid && t.m_axi_awready;
        const bool w = t.m_axi_wvalid && t.m_axi_wready;
        const bool b = t.m_axi_bvalid && t.m_axi_bready;
        Burst ar_burst{}, aw_burst{};
        if (ar) ar_burst = {t.m_axi_araddr, uint32_t(t.m_axi_arlen) + 1, 1u << t.m_axi_arsize,
                            t.m_axi_arid, RESP_OKAY, 0};
        if (aw) aw_burst = {t.m_axi_awaddr, uint32_t(t.m_axi_awlen) + 1, 1u << t.m_axi_awsize,
                            t.m_axi_awid, RESP_OKAY, 0};
        uint8_t wdata[AXI_BYTES];
        uint64_t wstrb = 0;
        bool wlast = false;
        if (w) {
            get_bytes(t.m_axi_wdata, wdata);
            wstrb = t.m_axi_wstrb;
            wlast = t.m_axi_wlast;
        }
        const bool host_aw_taken = host_aw && t.s_axil_awready;
        const bool host_w_taken = host_w && t.s_axil_wready;
        const bool host_ar_taken = host_ar && t.s_axil_arready;
        host_b_seen = host_b_seen || (t.s_axil_bvalid && t.s_axil_bready);
        if (t.s_axil_bvalid && t.s_axil_bready) host_bresp = t.s_axil_bresp;
        if (t.s_axil_rvalid && t.s_axil_rready) {
            host_r_seen = true;
            host_rdata = t.s_axil_rdata;
            host_rresp = t.s_axil_rresp;
        }
        // An input written since the last edge without an evaluation (the reset) acts at this edge.
        if (inputs_pending) load_inputs();
        const uint64_t edge_time = 2 * cycle + 1;
        ++cycle;

        // The DRAM model takes the transfers.
        if (ar) {
            ar_burst.resp = check(ar_burst.address, ar_burst.end(), false);
            ar_burst.ready_at = cycle + read_latency;
            reads.push_back(ar_burst);
        }
        if (r) {
            Burst& head = reads.front();
            if (++head.done == head.beats) reads.pop_front();
        }
        if (aw) {
            aw_burst.resp = check(aw_burst.address, aw_burst.end(), true);
            writes.push_back(aw_burst);
        }
        if (w) {
            Burst& head = writes.front();
            if (head.resp == RESP_OKAY) {
                const uint64_t base = head.beat_address(head.done) & ~uint64_t(AXI_BYTES - 1);
                for (int lane = 0; lane < AXI_BYTES; ++lane)
                    if (wstrb >> lane & 1) dram[base + lane] = wdata[lane];
            }
            ++head.done;
            if (wlast || head.done == head.beats) {
                head.ready_at = cycle + write_latency;
                responses.push_back(head);
                writes.pop_front();
            }
        }
        if (b) responses.pop_front();
        if (host_aw_taken) host_aw = false;
        if (host_w_taken) host_w = false;
        if (host_ar_taken) host_ar = false;

        // Inputs for the next cycle, on the wrapper's input ports: its input registers take them
        // at this edge, so the NPU sees them from this edge on.
        read_credit = std::min<uint32_t>(read_credit + bytes_per_cycle, 2 * AXI_BYTES);
        write_credit = std::min<uint32_t>(write_credit + bytes_per_cycle, 2 * AXI_BYTES);
        const bool read_beat = !reads.empty() && reads.front().ready_at <= cycle &&
                               read_credit >= AXI_BYTES && !pause();
        t.m_axi_rvalid = read_beat;
        if (read_beat) {
            read_credit -= AXI_BYTES;  // spent whether or not the NPU takes it this cycle
            const Burst& head = reads.front();
            const uint64_t base = head.beat_address(head.done) & ~uint64_t(AXI_BYTES - 1);
            static const uint8_t zeros[AXI_BYTES] = {};
            put_bytes(t.m_axi_rdata, head.resp == RESP_OKAY ? &dram[base] : zeros);
            t.m_axi_rresp = head.resp;
            t.m_axi_rid = head.id;
            t.m_axi_rlast = head.done + 1 == head.beats;
        }
        t.m_axi_arready = reads.size() < max_outstanding && !pause();
        t.m_axi_awready = writes.size() < max_outstanding && !pause();
        const bool write_beat = !writes.empty() && write_credit >= AXI_BYTES && !pause();
        if (write_beat) write_credit -= AXI_BYTES;
        t.m_axi_wready = write_beat;
        const bool response = !responses.empty() && responses.front().ready_at <= cycle && !pause();
        t.m_axi_bvalid = response;
        if (response) {
            t.m_axi_bresp = responses.front().resp;
            t.m_axi_bid = responses.front().id;
        }
        t.s_axil_awvalid = host_aw;
        t.s_axil_wvalid = host_w;
        t.s_axil_arvalid = host_ar;

        // The edge: the NPU's registers and the input registers together, one evaluation.
        t.clk = 1;
        t.load = 1;
        eval_trace(edge_time);
        t.clk = 0;
        t.load = 0;
        eval_trace(2 * cycle);
    }

    bool host_b_seen = false, host_r_seen = false;
    uint32_t host_bresp = 0, host_rresp = 0, host_rdata = 0;

    bool inputs_pending = false;  // an input port written that the NPU has not seen yet

    void reset(int cycles) {
        top->rst = 1;
        inputs_pending = true;
        for (int i = 0; i < cycles; ++i) tick();
        top->rst = 0;
        inputs_pending = true;
        tick();
    }
};

extern "C" {

NpuSim* npu_sim_create(uint64_t dram_bytes) {
    auto* sim = new NpuSim;
    sim->context = std::make_unique<VerilatedContext>();
#ifdef NPU_TRACE
    sim->context->traceEverOn(true);
#endif
    sim->top = std::make_unique<Vnpu>(sim->context.get(), "npu");
    sim->dram.assign(dram_bytes, 0);
    Vnpu& t = *sim->top;
    t.clk = 0;
    t.s_axil_wstrb = 0xF;
    t.s_axil_bready = 1;
    t.s_axil_rready = 1;
    t.load = 0;
    sim->load_inputs();
    sim->reset(4);
    return sim;
}

void npu_sim_destroy(NpuSim* sim) {
#ifdef NPU_TRACE
    if (sim->trace) sim->trace->close();
#endif
    sim->top->final();
    delete sim;
}

int npu_sim_axi_bytes() { return AXI_BYTES; }

int npu_sim_has_trace() {
#ifdef NPU_TRACE
    return 1;
#else
    return 0;
#endif
}

// Returns 0, or -1 when this build has no tracing or the file cannot be opened.
int npu_sim_trace_open(NpuSim* sim, const char* path) {
#ifdef NPU_TRACE
    sim->trace = std::make_unique<VerilatedFstC>();
    sim->top->trace(sim->trace.get(), 99);
    sim->trace->open(path);
    if (!sim->trace->isOpen()) {
        sim->trace.reset();
        return -1;
    }
    return 0;
#else
    (void)sim;
    (void)path;
    return -1;
#endif
}

void npu_sim_trace_close(NpuSim* sim) {
#ifdef NPU_TRACE
    if (sim->trace) {
        sim->trace->close();
        sim->trace.reset();
    }
#else
    (void)sim;
#endif
}

void npu_sim_set_dram_timing(NpuSim* sim, uint32_t read_latency, uint32_t write_latency,
                             uint32_t bytes_per_cycle, uint32_t max_outstanding) {
    sim->read_latency = read_latency;
    sim->write_latency = write_latency;
    sim->bytes_per_cycle = bytes_per_cycle;
    sim->max_outstanding = max_outstanding;
}

void npu_sim_set_backpressure(NpuSim* sim, uint64_t seed, uint32_t stall_permille) {
    sim->random.state = seed;
    sim->stall_permille = stall_permille;
}

void npu_sim_inject_error(NpuSim* sim, uint64_t begin, uint64_t end, int reads, int writes,
                          uint32_t resp) {
    sim->errors.push_back({begin, end, reads != 0, writes != 0, resp});
}

void npu_sim_clear_errors(NpuSim* sim) { sim->errors.clear(); }

uint64_t npu_sim_dram_size(NpuSim* sim) { return sim->dram.size(); }

int npu_sim_dram_write(NpuSim* sim, uint64_t address, const uint8_t* data, uint64_t size) {
    if (address > sim->dram.size() || size > sim->dram.size() - address) return -1;
    std::memcpy(&sim->dram[address], data, size);
    return 0;
}

int npu_sim_dram_read(NpuSim* sim, uint64_t address, uint8_t* data, uint64_t size) {
    if (address > sim->dram.size() || size > sim->dram.size() - address) return -1;
    std::memcpy(data, &sim->dram[address], size);
    return 0;
}

// AXI4-Lite write; returns BRESP, or -1 when the slave does not answer within `limit` cycles.
int npu_sim_reg_write(NpuSim* sim, uint32_t address, uint32_t value, uint32_t limit) {
    Vnpu& t = *sim->top;
    t.s_axil_awaddr = address;
    t.s_axil_wdata = value;
    t.s_axil_wstrb = 0xF;
    sim->host_aw = sim->host_w = true;
    sim->host_b_seen = false;
    t.s_axil_awvalid = t.s_axil_wvalid = 1;
    sim->load_inputs();
    for (uint32_t i = 0; i < limit && !sim->host_b_seen; ++i) sim->tick();
    sim->host_aw = sim->host_w = false;
    t.s_axil_awvalid = t.s_axil_wvalid = 0;
    sim->load_inputs();
    return sim->host_b_seen ? int(sim->host_bresp) : -1;
}

// AXI4-Lite read; returns RRESP (the data in *value), or -1 on no answer within `limit` cycles.
int npu_sim_reg_read(NpuSim* sim, uint32_t address, uint32_t* value, uint32_t limit) {
    Vnpu& t = *sim->top;
    t.s_axil_araddr = address;
    sim->host_ar = true;
    sim->host_r_seen = false;
    t.s_axil_arvalid = 1;
    sim->load_inputs();
    for (uint32_t i = 0; i < limit && !sim->host_r_seen; ++i) sim->tick();
    sim->host_ar = false;
    t.s_axil_arvalid = 0;
    sim->load_inputs();
    *value = sim->host_rdata;
    return sim->host_r_seen ? int(sim->host_rresp) : -1;
}

// Clocks until the IRQ is high or `max_cycles` have passed; returns 1 on the IRQ, 0 on the limit.
int npu_sim_run(NpuSim* sim, uint64_t max_cycles) {
    const uint64_t stop = sim->cycle + max_cycles;
    while (!sim->top->irq) {
        if (sim->cycle >= stop) return 0;
        sim->tick();
    }
    return 1;
}

void npu_sim_step(NpuSim* sim, uint64_t cycles) {
    for (uint64_t i = 0; i < cycles; ++i) sim->tick();
}

// Holds the reset for `cycles` cycles (the DRAM keeps its contents): the way out of a hung run.
void npu_sim_reset(NpuSim* sim, uint32_t cycles) {
    sim->reads.clear();
    sim->writes.clear();
    sim->responses.clear();
    sim->host_aw = sim->host_w = sim->host_ar = false;
    // Withdraw what the DRAM model offers, so that the first reset edge transfers nothing (a
    // beat offered in the last cycle would otherwise be taken from the emptied queues).
    Vnpu& t = *sim->top;
    t.m_axi_rvalid = t.m_axi_bvalid = 0;
    t.m_axi_arready = t.m_axi_awready = t.m_axi_wready = 0;
    sim->reset(int(cycles));
}

uint64_t npu_sim_cycles(NpuSim* sim) { return sim->cycle; }

int npu_sim_irq(NpuSim* sim) { return sim->top->irq; }

}  // extern "C"
