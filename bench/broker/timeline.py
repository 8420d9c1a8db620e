import sys,collections
# ts.py SAMPLES pattern... : time series of the classes matching each pattern (delta per sample)
lines=open(sys.argv[1]).read().split('\n')
samples=[]
for l in lines:
    p=l.split('\t')
    if p[0]=='S': samples.append([int(x) for x in p[1:]]+[{}])
    elif p[0]=='C' and samples:
        d=samples[-1][-1]; d[p[2]]=d.get(p[2],0)+int(p[1])
pats=sys.argv[2:]
t0=samples[0][0]
prev=None
print('t_s   total_red   ut+st_ms  '+'  '.join(p[:22] for p in pats))
for s in samples:
    vals=[sum(v for k,v in s[-1].items() if p in k) for p in pats]
    if prev:
        print('%6.1f %10d %6d  '%((s[0]-t0)/1e3,s[1]-prev[1],(s[2]+s[3]-prev[2]-prev[3])*10)+'  '.join('%10d'%(a-b) for a,b in zip(vals,prev[-1])))
    prev=s[:-1]+[vals]
