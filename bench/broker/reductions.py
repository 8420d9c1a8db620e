import sys,collections
# red.py SAMPLES N [pattern...]: per class, reductions over the samples (max - baseline)
lines=open(sys.argv[1]).read().split('\n')
samples=[]
for l in lines:
    p=l.split('\t')
    if p[0]=='S': samples.append([int(x) for x in p[1:]]+[{}])
    elif p[0]=='C' and samples: 
        d=samples[-1][-1]; d[p[2]]=d.get(p[2],0)+int(p[1])
N=float(sys.argv[2])
s0,s1=samples[0],samples[-1]
print('samples %d, %.1f s; per event: reductions %.0f, utime %.0f us, stime %.0f us, syscr %.2f, syscw %.2f, disk write %.0f B'%(
    len(samples),(s1[0]-s0[0])/1e3,(s1[1]-s0[1])/N,(s1[2]-s0[2])*1e4/N,(s1[3]-s0[3])*1e4/N,(s1[4]-s0[4])/N,(s1[5]-s0[5])/N,(s1[6]-s0[6])/N))
mx=collections.defaultdict(int); first={}
for s in samples:
    for k,v in s[-1].items():
        if k not in first: first[k]=v if s is s0 else 0
        mx[k]=max(mx[k],v)
delta={k:mx[k]-first[k] for k in mx}
tot=sum(delta.values())
print('sum of classes per event %.0f'%(tot/N))
for k,v in sorted(delta.items(),key=lambda x:-x[1]):
    if v>N*3: print('%8.0f  %s'%(v/N,k[:160]))
